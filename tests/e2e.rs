//! End-to-end tests over loopback, one binary (all self-contained: no external peer).

mod support;

mod e2e {
    mod admin_api;
    mod authorization;
    mod call;
    mod config_cli;
    mod device_caps;
    mod identity_listener;
    mod limits;
    mod out_of_dialog;
    mod pbx_tcp;
    mod provisioning;
    mod register;
    mod stuck_phone;
    mod tls_listener;
}
