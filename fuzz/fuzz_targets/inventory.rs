//! The device inventory (TOML or CSV, operator files, hot-reloaded): parsing arbitrary text
//! never panics; the first byte picks the format.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbx_edge::identity::inventory::InventoryFormat;
use pbx_edge::identity::Inventory;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let format = if sel & 1 == 0 {
        InventoryFormat::Toml
    } else {
        InventoryFormat::Csv
    };
    if let Ok(inv) = Inventory::parse(text, format) {
        for d in inv.devices() {
            let _ = inv.device(&d.mac);
        }
    }
});
