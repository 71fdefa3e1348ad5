//! TEMPORARY stand-in with the agreed API; replaced by the wip-ws branch on merge.
#![allow(missing_docs)]
pub mod codec {
    use bytes::{BufMut, Bytes, BytesMut};
    pub const MAX_HEADER: usize = 10;
    pub struct TextFrameBuilder {
        buf: BytesMut,
    }
    impl Default for TextFrameBuilder {
        fn default() -> Self {
            Self::new()
        }
    }
    impl TextFrameBuilder {
        pub fn new() -> Self {
            Self::with_capacity(128)
        }
        pub fn with_capacity(n: usize) -> Self {
            let mut buf = BytesMut::with_capacity(n + MAX_HEADER);
            buf.put_bytes(0, MAX_HEADER);
            TextFrameBuilder { buf }
        }
        pub fn finish(self) -> Bytes {
            let len = self.buf.len() - MAX_HEADER;
            let mut head = [0u8; MAX_HEADER];
            head[0] = 0x81;
            let h = if len < 126 {
                head[1] = len as u8;
                2
            } else if len < 65536 {
                head[1] = 126;
                head[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            } else {
                head[1] = 127;
                head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
                10
            };
            let mut buf = self.buf;
            buf[MAX_HEADER - h..MAX_HEADER].copy_from_slice(&head[..h]);
            buf.freeze().slice(MAX_HEADER - h..)
        }
    }
    impl std::io::Write for TextFrameBuilder {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.buf.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    pub fn payload_offset(frame: &Bytes) -> usize {
        match frame[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        }
    }
}
pub use codec::*;
