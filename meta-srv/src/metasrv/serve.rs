//! [`Metasrv::serve`]: binds TLS, runs the election, the leadership watcher, the timing
//! agreement check, gRPC (heartbeats, health, reflection) and the admin HTTP until the
//! shutdown signal; then resigns, closes every stream, stops accepting, joins its tasks
//! and flushes cached stats.

use std::future::Future;
use std::sync::Arc;

use common_proto::v1::heartbeat_server::HeartbeatServer;
use futures::{Stream, StreamExt};
use snafu::ResultExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::server::Connected;
use tracing::{error, info, warn};

use super::Metasrv;
use crate::error::{HttpServeSnafu, Result, ServeSnafu};
use crate::timings::MemberTimings;

impl Metasrv {
    /// Serves until `signal` resolves, then shuts down gracefully.
    pub async fn serve(
        self: &Arc<Self>,
        grpc: TcpListener,
        http: Option<TcpListener>,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        if let Ok(bound) = grpc.local_addr() {
            if self.options.server_addr.is_empty() && bound.to_string() != self.options.bind_addr {
                warn!(
                    advertised = %self.options.advertised_addr(),
                    bound = %bound,
                    "serving on a listener other than the advertised address: nodes will dial \
                     the advertised one (build with MetasrvBuilder::bound_to, or set server_addr)"
                );
            }
        }
        // TLS first: a listener that cannot serve fails the start before anything runs.
        // Handshakes happen in `TlsIncoming`, not in tonic or axum, so each failure is
        // logged and counted; tonic still reads the client certificate from the stream.
        let tls = self.options.tls();
        let grpc = if tls.enabled() {
            let addr = self.options.bind_addr.clone();
            Accepting::Tls(
                crate::tls::TlsIncoming::new(grpc, tls.grpc_server()?, "grpc")
                    .context(crate::error::BindSnafu { what: "gRPC", addr })?,
            )
        } else {
            Accepting::Plain(grpc)
        };
        let http = match http {
            Some(listener) if tls.enabled() => {
                let addr = self.options.http_addr.clone();
                Some(Accepting::Tls(
                    crate::tls::TlsIncoming::new(listener, tls.http_server()?, "admin").context(
                        crate::error::BindSnafu {
                            what: "admin HTTP",
                            addr,
                        },
                    )?,
                ))
            }
            Some(listener) => Some(Accepting::Plain(listener)),
            None => None,
        };
        match grpc {
            Accepting::Tls(incoming) => self.run(incoming.into_stream(), http, signal).await,
            Accepting::Plain(listener) => {
                // `tcp_nodelay` on the builder applies only to listeners tonic opens
                // itself; on our own listener every accepted socket is set here.
                // Without it, Nagle held the first data frame of every new stream and
                // every mailbox push ~40 ms.
                let incoming = TcpListenerStream::new(listener).map(|conn| {
                    if let Ok(stream) = &conn {
                        if let Err(err) = stream.set_nodelay(true) {
                            warn!(error = %err, "cannot set TCP_NODELAY on an accepted stream");
                        }
                    }
                    conn
                });
                self.run(incoming, http, signal).await
            }
        }
    }

    /// Serves gRPC (heartbeats, health, reflection) on the connections `incoming` yields,
    /// without TLS or the admin HTTP, until `signal` resolves; everything else runs as in
    /// [`Metasrv::serve`]. The seam for a transport other than TCP, such as a simulated
    /// network.
    pub async fn serve_with_incoming<IO: Conn, IE: ConnError>(
        self: &Arc<Self>,
        incoming: impl Stream<Item = std::result::Result<IO, IE>> + Send + 'static,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        self.run(incoming, None, signal).await
    }

    /// The shared body of both: the tasks, gRPC on `incoming` and the admin HTTP, until
    /// `signal`; then the shutdown in order.
    async fn run<IO: Conn, IE: ConnError>(
        self: &Arc<Self>,
        incoming: impl Stream<Item = std::result::Result<IO, IE>> + Send + 'static,
        http: Option<Accepting>,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let token = self.shutdown.clone();
        let mut tasks = tokio::task::JoinSet::new();
        {
            let election = self.election.clone();
            let t = token.child_token();
            tasks.spawn(async move {
                if let Err(err) = election.run(t).await {
                    error!(error = %err, "election stopped with an error");
                }
            });
        }
        tasks.spawn(self.leader.clone().watch());
        tasks.spawn(crate::timings::watch_agreement(
            self.election.clone(),
            self.options.advertised_addr().to_string(),
            MemberTimings::from(&self.options),
            token.clone(),
        ));
        {
            let srv = self.clone();
            tasks.spawn(async move {
                tokio::select! {
                    _ = signal => info!("shutdown requested"),
                    _ = srv.shutdown.cancelled() => {}
                }
                if let Err(err) = srv.election.resign().await {
                    warn!(error = %err, "resign failed; a successor waits for the lease TTL");
                }
                srv.shutdown.cancel();
            });
        }

        let (health, health_service) = tonic_health::server::health_reporter();
        tasks.spawn(super::health::report_leadership(
            health,
            self.ctx.leadership.clone(),
            self.election.subscribe(),
            (self.options.heartbeat_interval / 4).max(std::time::Duration::from_millis(50)),
            token.clone(),
        ));
        // Reflection in both protocol versions: grpcurl speaks v1, older tools v1alpha.
        let reflection_builder = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(common_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_error = |e: tonic_reflection::server::Error| crate::Error::InvalidConfig {
            reason: format!("gRPC reflection: {e}"),
        };
        let reflection = reflection_builder().build_v1().map_err(reflection_error)?;
        let reflection_alpha = reflection_builder()
            .build_v1alpha()
            .map_err(reflection_error)?;
        let service = HeartbeatServer::new(self.heartbeat_service())
            .max_decoding_message_size(self.options.max_message_bytes)
            .max_encoding_message_size(self.options.max_message_bytes);
        let grpc_router = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(self.options.heartbeat_interval))
            .http2_keepalive_timeout(Some(self.options.node_lease))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_alpha)
            .add_service(service);
        let grpc_fut =
            grpc_router.serve_with_incoming_shutdown(incoming, token.clone().cancelled_owned());
        let http_fut = async {
            let router = crate::admin::http::router(self.admin_state());
            let stop = token.clone().cancelled_owned();
            match http {
                Some(Accepting::Tls(incoming)) => axum::serve(incoming, router)
                    .with_graceful_shutdown(stop)
                    .await
                    .context(HttpServeSnafu),
                Some(Accepting::Plain(listener)) => {
                    use axum::serve::ListenerExt;
                    let listener = listener.tap_io(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                    axum::serve(listener, router)
                        .with_graceful_shutdown(stop)
                        .await
                        .context(HttpServeSnafu)
                }
                None => Ok(()),
            }
        };
        let (grpc_res, http_res) = tokio::join!(grpc_fut, http_fut);
        // Whatever ended first, everything stops.
        token.cancel();
        while tasks.join_next().await.is_some() {}
        self.flush_stats().await;
        info!("metasrv stopped");
        grpc_res.context(ServeSnafu)?;
        http_res
    }
}

/// A connection gRPC can be served on.
pub trait Conn: Connected + AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: Connected + AsyncRead + AsyncWrite + Unpin + Send + 'static> Conn for T {}

/// An error accepting a connection.
pub trait ConnError: Into<Box<dyn std::error::Error + Send + Sync>> {}

impl<E: Into<Box<dyn std::error::Error + Send + Sync>>> ConnError for E {}

/// A listener, plain or behind TLS handshakes.
enum Accepting {
    Plain(TcpListener),
    Tls(crate::tls::TlsIncoming),
}
