//! A client of the chat example, for its tests: lines with the client's timeouts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use super::{tcp_client, ExampleServer};

/// A chat client reading lines with a timeout.
pub struct Chatter {
    pub r: BufReader<TcpStream>,
    pub w: TcpStream,
}

impl Chatter {
    /// Connects without choosing a nickname yet.
    pub fn connect(server: &ExampleServer) -> Chatter {
        Chatter::over(tcp_client(server.socket_addr()))
    }

    pub fn over(w: TcpStream) -> Chatter {
        Chatter {
            r: BufReader::new(w.try_clone().unwrap()),
            w,
        }
    }

    /// Connects as `nick` and waits until seated (its `/who` is answered).
    #[track_caller]
    pub fn join(server: &ExampleServer, nick: &str) -> Chatter {
        Chatter::over(tcp_client(server.socket_addr())).seat(nick)
    }

    /// Sends `nick` and waits until seated (its `/who` is answered).
    #[track_caller]
    pub fn seat(self, nick: &str) -> Chatter {
        let mut c = self;
        c.send(&format!("{nick}\n/who\n"));
        let who = c.line();
        assert!(
            who.starts_with("* present: ") && who.ends_with(nick),
            "{who}"
        );
        c
    }

    #[track_caller]
    pub fn send(&mut self, text: &str) {
        self.send_bytes(text.as_bytes());
    }

    #[track_caller]
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).expect("send");
    }

    /// The next line without its `\n`; "" at EOF.
    #[track_caller]
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.r.read_line(&mut line).expect("read a line");
        if !line.is_empty() {
            assert!(line.ends_with('\n'), "unterminated line {line:?}");
            line.pop();
        }
        line
    }

    #[track_caller]
    pub fn expect(&mut self, want: &str) {
        assert_eq!(self.line(), want);
    }

    /// Reads what is left until the server closes the connection (bounded in bytes; every
    /// read has the client's timeout), for a client that stopped reading long ago.
    #[track_caller]
    pub fn drain_to_eof(&mut self) {
        let mut buf = vec![0; 1 << 16];
        let mut total = 0usize;
        loop {
            match self.r.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => total += n,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
                Err(e) => panic!("no EOF after {total} bytes: {e}"),
            }
            assert!(total < 1 << 30, "the connection was never closed");
        }
    }

    /// Reads to EOF (the server closed the connection).
    #[track_caller]
    pub fn expect_eof(&mut self) {
        let mut rest = Vec::new();
        match self.r.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest)),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
}
