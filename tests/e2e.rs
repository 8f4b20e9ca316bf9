//! End-to-end tests over loopback, one binary (all self-contained: no external peer).

mod support;

mod e2e {
    mod config_cli;
    mod identity_listener;
    mod register;
    mod tls_listener;
}
