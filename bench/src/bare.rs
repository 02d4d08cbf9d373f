//! The HTTP ceiling: a bare actix-web server answering the same routes as lockserver
//! (`POST /acquire`, `POST /release`), parsing the JSON body and checking the secret header,
//! with a fixed answer and no lock logic. Run as `lockserver-bench bare-server SECRET`.

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use lockserver_protocol::SECRET_HEADER;
use serde::Deserialize;

#[derive(Deserialize)]
struct Body {
    #[allow(dead_code)]
    resource: String,
    #[allow(dead_code)]
    owner: String,
}

async fn answer(request: HttpRequest, body: web::Json<Body>, secret: web::Data<String>) -> HttpResponse {
    let _ = body;
    match request.headers().get(SECRET_HEADER) {
        Some(given) if given.as_bytes() == secret.as_bytes() => HttpResponse::Ok()
            .content_type("application/json")
            .body(r#"{"resource":"r","owner":"o","token":1,"expires_in_ms":null,"value":null}"#),
        _ => HttpResponse::Unauthorized().finish(),
    }
}

/// Serves until killed; prints `lockserver listening on http://ADDR` like the real server.
pub fn run(secret: String) -> std::io::Result<()> {
    actix_web::rt::System::new().block_on(async move {
        let secret = web::Data::new(secret);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(secret.clone())
                .app_data(web::JsonConfig::default().content_type_required(false))
                .route("/acquire", web::post().to(answer))
                .route("/release", web::post().to(answer))
        })
        .bind(("127.0.0.1", 0))?;
        println!("lockserver listening on http://{}", server.addrs()[0]);
        server.run().await
    })
}
