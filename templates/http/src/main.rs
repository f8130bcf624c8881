// An HTTP service (axum on tokio), built into a unikernel with
// `cargo unikernel build`. The network component is linked in because
// the app uses sockets; `cargo unikernel run -p 8080:8080` publishes
// the port on the host (rootless), so `curl localhost:8080` answers.
//
// Routes: `GET /` greets, `GET /health` says ok, `POST /echo` returns
// the request body.
use axum::{routing::get, routing::post, Router};

async fn hello() -> &'static str {
    "hello from the unikernel\n"
}

async fn health() -> &'static str {
    "ok\n"
}

async fn echo(body: String) -> String {
    body
}

#[tokio::main]
async fn main() {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let app = Router::new()
        .route("/", get(hello))
        .route("/health", get(health))
        .route("/echo", post(echo));
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .unwrap_or_else(|e| panic!("cannot listen on port {port}: {e}"));
    eprintln!("listening on http://{}", listener.local_addr().unwrap());
    axum::serve(listener, app).await.expect("server error");
}
