//! The HTTP ceiling: a bare actix-web server answering the same routes as lockserver
//! (`POST /acquire`, `POST /release`), parsing the JSON body and checking the secret header,
//! with a fixed answer and no lock logic. Run as `lockserver-bench bare-server SECRET [FILE]`:
//! with FILE, every request also appends a record to FILE and `fdatasync`s it before answering,
//! as Redis with `appendfsync always` does for one client: the ceiling of a durable answer.

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use lockserver_protocol::SECRET_HEADER;
use serde::Deserialize;

#[derive(Deserialize)]
struct Body {
    resource: String,
    owner: String,
}

/// The file each request is made durable in, if any.
struct Journal(Option<Mutex<File>>);

async fn answer(
    request: HttpRequest,
    body: web::Json<Body>,
    secret: web::Data<String>,
    journal: web::Data<Journal>,
) -> HttpResponse {
    if let Some(file) = &journal.0 {
        // Inline, blocking the worker: the fastest way for one client, so a true ceiling.
        let file = file.lock().expect("the journal");
        (&*file).write_all(format!("{} {}\n", body.resource, body.owner).as_bytes()).expect("appending");
        file.sync_data().expect("fdatasync");
    }
    match request.headers().get(SECRET_HEADER) {
        Some(given) if given.as_bytes() == secret.as_bytes() => HttpResponse::Ok()
            .content_type("application/json")
            .body(r#"{"resource":"r","owner":"o","token":1,"expires_in_ms":null,"value":null}"#),
        _ => HttpResponse::Unauthorized().finish(),
    }
}

/// Serves until killed; prints `lockserver listening on http://ADDR` like the real server.
pub fn run(secret: String, journal: Option<String>) -> std::io::Result<()> {
    let journal = match journal {
        Some(path) => Some(Mutex::new(File::options().create(true).append(true).open(path)?)),
        None => None,
    };
    actix_web::rt::System::new().block_on(async move {
        let secret = web::Data::new(secret);
        let journal = web::Data::new(Journal(journal));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(secret.clone())
                .app_data(journal.clone())
                .app_data(web::JsonConfig::default().content_type_required(false))
                .route("/acquire", web::post().to(answer))
                .route("/release", web::post().to(answer))
        })
        .bind(("127.0.0.1", 0))?;
        println!("lockserver listening on http://{}", server.addrs()[0]);
        server.run().await
    })
}
