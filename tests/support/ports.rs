//! The media port blocks of the e2e tests that give their edge its own range. The tests of one
//! binary run in parallel, and an edge skips a port another edge holds, so two tests sharing a
//! block only show it under load — as a 503 when the smaller block runs dry (seen in CI). Every
//! block is named here once, and `blocks_are_disjoint` proves no two overlap, nor any with the
//! development config's default range that every other test's edge uses.

/// `(PBX_EDGE_MEDIA__PORT_MIN, PBX_EDGE_MEDIA__PORT_MAX)` of one test's edge.
pub type Block = (&'static str, &'static str);

pub const MEDIA_POLICY: Block = ("41000", "41999");
pub const CALL: Block = ("42000", "42999");
pub const CALL_TIMERS: Block = ("43000", "43999");
pub const DRAIN_ONE: Block = ("44100", "44199");
pub const DRAIN_TWO: Block = ("44200", "44299");
pub const DRAIN_THREE: Block = ("44300", "44399");
pub const PBX_FAULTS: Block = ("44400", "44499");
pub const PBX_TCP: Block = ("44500", "44599");
pub const PBX_FAULTS_TCP: Block = ("44600", "44699");
pub const EDGE_CRASH: Block = ("44800", "44899");
pub const FAILOVER_A: Block = ("44900", "44949");
pub const FAILOVER_B: Block = ("44950", "44999");
pub const DEVICE_CAPS: Block = ("45000", "45999");
pub const SIGHUP_HUNDRED_CALLS: Block = ("48000", "48799");
pub const QUALITY: Block = ("52000", "52999");

/// Every block above, by name (the disjointness check reads this list).
pub const ALL: &[(&str, Block)] = &[
    ("MEDIA_POLICY", MEDIA_POLICY),
    ("CALL", CALL),
    ("CALL_TIMERS", CALL_TIMERS),
    ("DRAIN_ONE", DRAIN_ONE),
    ("DRAIN_TWO", DRAIN_TWO),
    ("DRAIN_THREE", DRAIN_THREE),
    ("PBX_FAULTS", PBX_FAULTS),
    ("PBX_TCP", PBX_TCP),
    ("PBX_FAULTS_TCP", PBX_FAULTS_TCP),
    ("EDGE_CRASH", EDGE_CRASH),
    ("FAILOVER_A", FAILOVER_A),
    ("FAILOVER_B", FAILOVER_B),
    ("DEVICE_CAPS", DEVICE_CAPS),
    ("SIGHUP_HUNDRED_CALLS", SIGHUP_HUNDRED_CALLS),
    ("QUALITY", QUALITY),
];

/// The development config's default media range (src/devpki.rs), used by every test edge
/// that names no block.
pub const DEFAULT: Block = ("30000", "39999");

fn bounds(name: &str, (min, max): Block) -> (u16, u16) {
    let parse = |v: &str| {
        v.parse::<u16>()
            .unwrap_or_else(|_| panic!("{name}: {v} is not a port"))
    };
    let (min, max) = (parse(min), parse(max));
    assert!(min <= max, "{name}: {min} > {max}");
    (min, max)
}

/// Names of the first two overlapping blocks in `blocks`, if any.
pub fn overlap(blocks: &[(&'static str, Block)]) -> Option<(&'static str, &'static str)> {
    for (i, (a, block_a)) in blocks.iter().enumerate() {
        let (a_min, a_max) = bounds(a, *block_a);
        for (b, block_b) in &blocks[i + 1..] {
            let (b_min, b_max) = bounds(b, *block_b);
            if a_min <= b_max && b_min <= a_max {
                return Some((a, b));
            }
        }
    }
    None
}

#[test]
fn blocks_are_disjoint() {
    let mut blocks = ALL.to_vec();
    blocks.push(("DEFAULT", DEFAULT));
    assert_eq!(overlap(&blocks), None);
    // The check can fail: two blocks that share one port are caught.
    assert_eq!(
        overlap(&[("X", ("100", "200")), ("Y", ("200", "300"))]),
        Some(("X", "Y"))
    );
    assert_eq!(
        overlap(&[("X", ("100", "199")), ("Y", ("200", "300"))]),
        None
    );
}
