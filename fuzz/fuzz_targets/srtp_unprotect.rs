//! Unprotect (RTP and RTCP) on arbitrary bytes never panics, for every suite, with and
//! without MKI, with several MKI-selected keys, and the unencrypted/quirk options; protect of
//! arbitrary bytes never panics either. The first input byte picks the configuration.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use pbx_edge::srtp::{KeyParams, MasterKey, Mki, SrtpContext};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let (suite, opts) = common::srtp_selection(sel, Mki::new(0x0102, 2));
    let key = MasterKey::generate(suite, |b| b.fill(0x42));
    let mut ctx = if sel & 0x80 != 0 {
        // Two keys selected by MKI, the first with a tiny lifetime.
        let keys = [
            KeyParams {
                master_key: key.clone(),
                lifetime: Some(2),
                mki: Mki::new(1, 1),
            },
            KeyParams {
                master_key: MasterKey::generate(suite, |b| b.fill(0x43)),
                lifetime: None,
                mki: Mki::new(2, 1),
            },
        ];
        SrtpContext::with_keys(&keys, &opts).expect("valid keys")
    } else {
        SrtpContext::new(&key, &opts).expect("valid options")
    };

    let mut rtp = rest.to_vec();
    let _ = ctx.unprotect_rtp(&mut rtp);
    let mut rtcp = rest.to_vec();
    let _ = ctx.unprotect_rtcp(&mut rtcp);

    // Protect with and without room for the trailer.
    let mut buf = rest.to_vec();
    buf.resize(rest.len() + 40, 0);
    let _ = ctx.protect_rtp(&mut buf, rest.len());
    let _ = ctx.protect_rtcp(&mut buf, rest.len());
    let mut tight = rest.to_vec();
    let _ = ctx.protect_rtp(&mut tight, rest.len());

    // A packet we protected must come back intact through a second context.
    let mut tx = SrtpContext::new(&key, &opts).expect("valid options");
    let mut rx = SrtpContext::new(&key, &opts).expect("valid options");
    let mut fresh = rest.to_vec();
    fresh.resize(rest.len() + 40, 0);
    if let Ok(n) = tx.protect_rtp(&mut fresh, rest.len()) {
        let plain_len = rx
            .unprotect_rtp(&mut fresh[..n])
            .expect("own packet must verify");
        assert_eq!(&fresh[..plain_len], rest);
    }
});
