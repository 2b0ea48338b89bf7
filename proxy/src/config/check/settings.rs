//! The top-level settings: `access_log:`, `http:`, `shutdown:` and `admin:`.
//!
//! Runs on: the thread that loads the config. Pure.

use super::{Checker, Result};
use crate::config::file::{FileAccessLog, FileAdmin, FileHttp, FileShutdown};
use crate::config::{AccessLogConfig, AdminConfig, HttpConfig, ShutdownConfig};

impl Checker<'_> {
    pub(super) fn access_log(&self, file: FileAccessLog) -> Result<AccessLogConfig> {
        if file.path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(self.error(
                "access_log.path",
                "must not be empty (leave it out for standard output)",
            ));
        }
        Ok(AccessLogConfig {
            enabled: file.enabled,
            path: file.path,
        })
    }

    pub(super) fn http(&self, file: FileHttp) -> Result<HttpConfig> {
        let d = HttpConfig::default();
        Ok(HttpConfig {
            client_header_timeout: self.duration(
                "http.client_header_timeout",
                file.client_header_timeout.as_deref(),
                d.client_header_timeout,
            )?,
            keepalive_timeout: self.duration(
                "http.keepalive_timeout",
                file.keepalive_timeout.as_deref(),
                d.keepalive_timeout,
            )?,
            client_body_timeout: self.duration(
                "http.client_body_timeout",
                file.client_body_timeout.as_deref(),
                d.client_body_timeout,
            )?,
            max_request_line_bytes: self.positive(
                "http.max_request_line_bytes",
                file.max_request_line_bytes,
                d.max_request_line_bytes,
            )?,
            max_request_head_bytes: self.positive(
                "http.max_request_head_bytes",
                file.max_request_head_bytes,
                d.max_request_head_bytes,
            )?,
            tunnel_idle_timeout: self.duration(
                "http.tunnel_idle_timeout",
                file.tunnel_idle_timeout.as_deref(),
                d.tunnel_idle_timeout,
            )?,
            max_connections_per_worker: self.positive(
                "http.max_connections_per_worker",
                file.max_connections_per_worker,
                d.max_connections_per_worker,
            )?,
            max_headers: match self.positive("http.max_headers", file.max_headers, d.max_headers)? {
                n if n > crate::http::head::MAX_HEADERS => {
                    return Err(self.error(
                        "http.max_headers",
                        format!("must be at most {}", crate::http::head::MAX_HEADERS),
                    ))
                }
                n => n,
            },
            max_request_body_bytes: file
                .max_request_body_bytes
                .unwrap_or(d.max_request_body_bytes),
        })
    }

    pub(super) fn shutdown(&self, file: FileShutdown) -> Result<ShutdownConfig> {
        let d = ShutdownConfig::default();
        Ok(ShutdownConfig {
            delay: self.duration_or_zero("shutdown.delay", file.delay.as_deref(), d.delay)?,
            timeout: self.duration("shutdown.timeout", file.timeout.as_deref(), d.timeout)?,
        })
    }

    pub(super) fn admin(&self, file: FileAdmin) -> Result<AdminConfig> {
        if file.enabled == Some(false) {
            return Ok(AdminConfig { listen: None });
        }
        let listen = match file.listen.as_deref() {
            None => AdminConfig::DEFAULT_LISTEN,
            Some(text) => self.socket_addr("admin.listen", text)?,
        };
        Ok(AdminConfig {
            listen: Some(listen),
        })
    }
}
