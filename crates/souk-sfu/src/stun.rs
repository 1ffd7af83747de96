//! Just enough STUN (RFC 8489) to route a datagram from an unknown address.
//!
//! A browser's first packet from a new address is a binding request whose USERNAME is
//! `<our ufrag>:<their ufrag>`. Our ufrag names the peer connection, so it tells us which
//! `Rtc` the address belongs to without asking every `Rtc` in turn.

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const HEADER_LEN: usize = 20;
const ATTR_USERNAME: u16 = 0x0006;

/// True when the datagram looks like STUN: the top two bits are zero and the magic
/// cookie is in place (RFC 7983 demultiplexing).
pub fn is_stun(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER_LEN && datagram[0] < 2 && datagram[4..8] == MAGIC_COOKIE
}

/// Our (the receiver's) ufrag from a binding request's USERNAME, if present.
pub fn local_ufrag(datagram: &[u8]) -> Option<&str> {
    if !is_stun(datagram) {
        return None;
    }
    let declared = u16::from_be_bytes([datagram[2], datagram[3]]) as usize;
    let body = datagram.get(HEADER_LEN..HEADER_LEN + declared)?;
    let mut rest = body;
    while rest.len() >= 4 {
        let kind = u16::from_be_bytes([rest[0], rest[1]]);
        let len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
        let value = rest.get(4..4 + len)?;
        if kind == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        // Attribute values are padded to a multiple of four bytes.
        let padded = (len + 3) & !3;
        rest = rest.get(4 + padded..)?;
    }
    None
}

#[cfg(test)]
pub(crate) fn binding_request(username: &str) -> Vec<u8> {
    let mut attr = Vec::new();
    attr.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
    attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attr.extend_from_slice(username.as_bytes());
    while attr.len() % 4 != 0 {
        attr.push(0);
    }
    let mut msg = vec![0x00, 0x01];
    msg.extend_from_slice(&(attr.len() as u16).to_be_bytes());
    msg.extend_from_slice(&MAGIC_COOKIE);
    msg.extend_from_slice(&[7; 12]);
    msg.extend_from_slice(&attr);
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_our_ufrag() {
        let msg = binding_request("srvA:brwB");
        assert!(is_stun(&msg));
        assert_eq!(local_ufrag(&msg), Some("srvA"));
    }

    #[test]
    fn ignores_non_stun_and_truncation() {
        assert_eq!(local_ufrag(&[0x80, 0x60, 0, 1]), None);
        let mut msg = binding_request("srvA:brwB");
        msg.truncate(24);
        assert_eq!(local_ufrag(&msg), None);
        assert_eq!(local_ufrag(&[]), None);
    }
}
