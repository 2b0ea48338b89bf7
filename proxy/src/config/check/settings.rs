//! The top-level settings: `access_log:`, `http:`, `shutdown:` and `admin:`.
//!
//! Runs on: the thread that loads the config. Pure.

use super::{Checker, Result};
use crate::config::file::{FileAccessLog, FileAdmin, FileHttp, FileHttp2, FileShutdown};
use crate::config::{AccessLogConfig, AdminConfig, Http2Config, HttpConfig, ShutdownConfig};

impl Checker<'_> {
    pub(super) fn access_log(&self, file: FileAccessLog) -> Result<AccessLogConfig> {
        if file.path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(self.error(
                "access_log.path",
                "must not be empty (leave it out for standard output)",
            ));
        }
        use crate::access_log::Format;
        use crate::config::file::FileLogFormat;
        Ok(AccessLogConfig {
            enabled: file.enabled,
            path: file.path,
            format: match file.format {
                FileLogFormat::Strait => Format::Strait,
                FileLogFormat::Apisix => Format::Apisix,
                FileLogFormat::Json => Format::Json,
            },
        })
    }

    pub(super) fn http(&self, file: FileHttp) -> Result<HttpConfig> {
        let d = HttpConfig::default();
        Ok(HttpConfig {
            request_id: self.request_id(file.request_id)?,
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
            client_body_total_timeout: self.duration(
                "http.client_body_total_timeout",
                file.client_body_total_timeout.as_deref(),
                d.client_body_total_timeout,
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
            http2: self.http2(file.http2)?,
        })
    }

    fn http2(&self, f: FileHttp2) -> Result<Http2Config> {
        let d = Http2Config::default();
        // RFC 9113 §6.5.2: windows up to 2^31-1; frames are 16 KiB, so a window below
        // that only slows a stream down.
        let window = |field: &str, v: Option<u32>, default: u32| -> Result<u32> {
            match v {
                None => Ok(default),
                Some(n) if (16_384..=0x7fff_ffff).contains(&n) => Ok(n),
                Some(_) => Err(self.error(
                    format!("http.http2.{field}"),
                    "must be between 16384 and 2147483647 bytes",
                )),
            }
        };
        Ok(Http2Config {
            enabled: f.enabled.unwrap_or(d.enabled),
            max_concurrent_streams: self.positive(
                "http.http2.max_concurrent_streams",
                f.max_concurrent_streams,
                d.max_concurrent_streams,
            )?,
            max_header_list_size: self.positive(
                "http.http2.max_header_list_size",
                f.max_header_list_size,
                d.max_header_list_size,
            )?,
            initial_stream_window: window(
                "initial_stream_window",
                f.initial_stream_window,
                d.initial_stream_window,
            )?,
            initial_connection_window: window(
                "initial_connection_window",
                f.initial_connection_window,
                d.initial_connection_window,
            )?,
            max_send_buffer: self.positive(
                "http.http2.max_send_buffer",
                f.max_send_buffer,
                d.max_send_buffer,
            )?,
            max_pending_resets: self.positive(
                "http.http2.max_pending_resets",
                f.max_pending_resets,
                d.max_pending_resets,
            )?,
            max_local_resets: self.positive(
                "http.http2.max_local_resets",
                f.max_local_resets,
                d.max_local_resets,
            )?,
            stream_idle_timeout: self.duration(
                "http.http2.stream_idle_timeout",
                f.stream_idle_timeout.as_deref(),
                d.stream_idle_timeout,
            )?,
            max_control_frames: self.positive(
                "http.http2.max_control_frames",
                f.max_control_frames,
                d.max_control_frames,
            )?,
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
            return Ok(AdminConfig {
                listen: None,
                socket: None,
            });
        }
        let listen = match file.listen.as_deref() {
            None => AdminConfig::DEFAULT_LISTEN,
            Some(text) => self.socket_addr("admin.listen", text)?,
        };
        if let Some(p) = &file.socket {
            if !p.is_absolute() {
                return Err(self.error("admin.socket", "must be an absolute path"));
            }
        }
        Ok(AdminConfig {
            listen: Some(listen),
            socket: file.socket,
        })
    }
}
