//! The one HTTP/1.1 server layer every HTTP service of the loop shares (the tracker now; a status page or RPC later),
//! with no IO: [`request`] frames requests, [`response`] writes responses, and [`Conn`] is one client connection
//! (pipelining, keep-alive, time-outs) that hands each whole request to the service's handler.
//!
//! A service is a function: it gets the [`Request`] and fills in a [`Response`]; routing is the service's own
//! `match` on the method and path.

pub mod conn;
pub mod request;
pub mod response;

pub use conn::{Conn, Limits, Response, TimedOut};
pub use request::{HttpError, MAX_HEAD, PercentError, Request, parse_request, percent_decode_into, query_pairs};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    LengthRequired,
    PayloadTooLarge,
    HeaderFieldsTooLarge,
    InternalServerError,
    ServiceUnavailable,
    /// Any other status: its code and reason phrase.
    Other(u16, &'static str),
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::LengthRequired => 411,
            Status::PayloadTooLarge => 413,
            Status::HeaderFieldsTooLarge => 431,
            Status::InternalServerError => 500,
            Status::ServiceUnavailable => 503,
            Status::Other(code, _) => code,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::LengthRequired => "Length Required",
            Status::PayloadTooLarge => "Payload Too Large",
            Status::HeaderFieldsTooLarge => "Request Header Fields Too Large",
            Status::InternalServerError => "Internal Server Error",
            Status::ServiceUnavailable => "Service Unavailable",
            Status::Other(_, reason) => reason,
        }
    }
}
