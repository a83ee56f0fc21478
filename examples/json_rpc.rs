//! A length-prefixed JSON RPC server: each request is one frame (u32 big-endian length,
//! Python's `struct.pack('!I', n)`) holding `{"id": .., "method": "add"|"mul"|"echo",
//! "params": [..]}`; each reply is one frame, `{"id": .., "result": ..}` or
//! `{"id": .., "error": ".."}`. A frame that is not a valid call gets an error reply and the
//! connection goes on; an oversize or cut frame closes it.
//!
//! ```sh
//! cargo run --example json_rpc                 # listens on 127.0.0.1:8012
//! ```

mod common;

use std::io;

use serde::Deserialize;
use serde_json::{json, Value};
use socketserver::{framing, StreamRequest};

#[derive(Deserialize)]
struct Call {
    id: Value,
    method: String,
    #[serde(default)]
    params: Vec<Value>,
}

fn call(c: &Call) -> Result<Value, String> {
    let numbers = || -> Result<Vec<f64>, String> {
        c.params
            .iter()
            .map(|p| p.as_f64().ok_or(format!("not a number: {p}")))
            .collect()
    };
    match c.method.as_str() {
        "add" => Ok(json!(numbers()?.iter().sum::<f64>())),
        "mul" => Ok(json!(numbers()?.iter().product::<f64>())),
        "echo" => Ok(json!(c.params)),
        other => Err(format!("unknown method {other:?}")),
    }
}

fn main() -> io::Result<()> {
    common::init_logging();
    let args = common::parse("Length-prefixed JSON RPC server (default 127.0.0.1:8012)");
    common::serve_tcp(
        &args,
        common::Service::new(8012),
        |req: &mut StreamRequest| loop {
            let reply = match framing::read_json::<Call, _>(req) {
                Ok(Some(c)) => match call(&c) {
                    Ok(result) => json!({ "id": c.id, "result": result }),
                    Err(error) => json!({ "id": c.id, "error": error }),
                },
                Ok(None) => return Ok(()),
                Err(e) if framing::stream_usable(&e) => {
                    json!({ "id": null, "error": e.to_string() })
                }
                Err(e) => return Err(e),
            };
            framing::write_json(req, &reply)?;
        },
    )
}
