//! End-to-end tests over loopback, one binary (all self-contained: no external peer).

mod support;

mod e2e {
    mod admin_api;
    mod admin_api_unavailable;
    mod authorization;
    mod call;
    mod call_log_rotation;
    mod config_cli;
    mod device_caps;
    mod drain;
    mod edge_crash;
    mod failover;
    mod file_reloads;
    mod hep_capture;
    mod identity_listener;
    mod limits;
    mod listener_timeouts;
    mod media_policy;
    mod out_of_dialog;
    mod pbx_faults;
    mod pbx_tcp;
    mod provisioning;
    mod quality;
    mod register;
    mod stuck_phone;
    mod tls_listener;
}
