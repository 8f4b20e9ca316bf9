//! The pbx-edge control path of the call load tool: phones over SIP/TLS with device
//! certificates through a real `pbx-edge` process, the PBX answered by the generator.
//!
//! STUB in branch `calls`: the real module comes from branch `fleet` (the lead merges both,
//! taking that branch's file). The contract `main.rs` relies on:
//!
//! ```text
//! pub struct EdgeOptions { .. }                 // implements Default (release binary, ports, ..)
//! pub struct EdgeRun { pub media: Vec<CallMedia>, pub pid: u32, .. }  // pid: the edge process
//! pub fn setup_calls(calls: usize, options: &EdgeOptions) -> Result<EdgeRun, String>;
//! impl EdgeRun { pub fn finish(self) -> Result<(), String>; }  // hang up, stop the edge by PID
//! ```

use crate::legs::CallMedia;

/// Options of the edge control path (the real module has its own fields).
#[derive(Debug, Clone, Default)]
pub struct EdgeOptions {}

/// Calls set up through the edge.
pub struct EdgeRun {
    pub media: Vec<CallMedia>,
    /// The edge process, for its CPU time and RSS.
    pub pid: u32,
}

/// Sets up `calls` calls through the edge.
pub fn setup_calls(_calls: usize, _options: &EdgeOptions) -> Result<EdgeRun, String> {
    Err("edge control path not built in this branch".into())
}

impl EdgeRun {
    /// Hangs up every call and stops the edge by its PID.
    pub fn finish(self) -> Result<(), String> {
        Ok(())
    }
}
