//! Sluice's one extension to a Kafka message: the damaged ranges of a partition, carried in a
//! tagged field of each DescribeLogDirs partition (flexible versions, v2 and later). Kafka's
//! messages have no field for them, and every Kafka client skips tagged fields it does not know,
//! so the field costs other clients nothing. The broker encodes it here and the admin CLI decodes
//! it here, so both sides read one definition (docs/compatibility.md describes it for others).
//!
//! The tagged field's value, in Kafka's notation:
//!
//! ```text
//! DamagedRanges => [Range] TAG_BUFFER     (a compact array)
//!   Range => kind:INT8 segment_base_offset:INT64 position:INT64 size_bytes:INT64
//!            first_offset:INT64 last_offset:INT64 TAG_BUFFER
//! ```
//!
//! A decoder skips the tagged fields of each range and of the whole, so that fields can be added.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The tag of the field on `DescribeLogDirsPartition`: far above the small numbers Kafka gives
/// its own tagged fields, so that Kafka never collides with it.
pub const DAMAGED_RANGES_TAG: i32 = 10_000;

/// Bytes of one range's fixed fields (kind, five INT64s), before its tagged fields.
const RANGE_FIXED_BYTES: usize = 1 + 5 * 8;

/// What readers get at the offsets of a damaged range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    /// Batches failing their CRC: fetches there answer CORRUPT_MESSAGE until DeleteRecords or
    /// a seek moves past them.
    Corrupt,
    /// A segment cut short: the offsets are gone and fetches skip them.
    Lost,
    /// An active segment truncated at a start: later records took the offsets from
    /// `first_offset` on, so `last_offset` is unknown (-1).
    Truncated,
    /// A kind this decoder does not know (a newer broker).
    Other(i8),
}

impl DamageKind {
    pub fn code(self) -> i8 {
        match self {
            DamageKind::Corrupt => 0,
            DamageKind::Lost => 1,
            DamageKind::Truncated => 2,
            DamageKind::Other(code) => code,
        }
    }

    pub fn from_code(code: i8) -> DamageKind {
        match code {
            0 => DamageKind::Corrupt,
            1 => DamageKind::Lost,
            2 => DamageKind::Truncated,
            other => DamageKind::Other(other),
        }
    }

    /// The name the CLI prints.
    pub fn name(self) -> String {
        match self {
            DamageKind::Corrupt => "corrupt".to_string(),
            DamageKind::Lost => "lost".to_string(),
            DamageKind::Truncated => "truncated".to_string(),
            DamageKind::Other(code) => format!("kind-{code}"),
        }
    }
}

/// One damaged range of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DamagedRange {
    pub kind: DamageKind,
    /// The base offset of the segment holding it: the file `<20 digits>.log`.
    pub segment_base_offset: i64,
    /// Where in that file the range starts, and its bytes.
    pub position: i64,
    pub size_bytes: i64,
    pub first_offset: i64,
    /// The range's last offset, inclusive; -1 when unknown.
    pub last_offset: i64,
}

/// Why a tagged field's bytes are not damaged ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed damaged ranges field: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

/// The tagged field's value for `ranges`.
pub fn encode(ranges: &[DamagedRange]) -> Bytes {
    let mut buf = BytesMut::with_capacity(2 + ranges.len() * (RANGE_FIXED_BYTES + 1));
    put_uvarint(&mut buf, ranges.len() as u32 + 1);
    for r in ranges {
        buf.put_i8(r.kind.code());
        buf.put_i64(r.segment_base_offset);
        buf.put_i64(r.position);
        buf.put_i64(r.size_bytes);
        buf.put_i64(r.first_offset);
        buf.put_i64(r.last_offset);
        put_uvarint(&mut buf, 0);
    }
    put_uvarint(&mut buf, 0);
    buf.freeze()
}

/// The ranges in a tagged field's value.
pub fn decode(mut buf: &[u8]) -> Result<Vec<DamagedRange>, Malformed> {
    let count = match get_uvarint(&mut buf)? {
        0 => return Err(Malformed("a null array")),
        n => (n - 1) as usize,
    };
    // Bounds the allocation by the bytes present, whatever the count claims.
    if count > buf.len() / RANGE_FIXED_BYTES {
        return Err(Malformed("more ranges than bytes"));
    }
    let mut ranges = Vec::with_capacity(count);
    for _ in 0..count {
        if buf.len() < RANGE_FIXED_BYTES {
            return Err(Malformed("a range cut short"));
        }
        ranges.push(DamagedRange {
            kind: DamageKind::from_code(buf.get_i8()),
            segment_base_offset: buf.get_i64(),
            position: buf.get_i64(),
            size_bytes: buf.get_i64(),
            first_offset: buf.get_i64(),
            last_offset: buf.get_i64(),
        });
        skip_tagged_fields(&mut buf)?;
    }
    skip_tagged_fields(&mut buf)?;
    if !buf.is_empty() {
        return Err(Malformed("bytes after the ranges"));
    }
    Ok(ranges)
}

fn put_uvarint(buf: &mut BytesMut, mut value: u32) {
    while value >= 0x80 {
        buf.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

fn get_uvarint(buf: &mut &[u8]) -> Result<u32, Malformed> {
    let mut value = 0u32;
    for shift in (0..35).step_by(7) {
        if buf.is_empty() {
            return Err(Malformed("a varint cut short"));
        }
        let byte = buf.get_u8();
        value |= u32::from(byte & 0x7f)
            .checked_shl(shift)
            .filter(|v| v >> shift == u32::from(byte & 0x7f))
            .ok_or(Malformed("a varint too large"))?;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(Malformed("a varint too long"))
}

fn skip_tagged_fields(buf: &mut &[u8]) -> Result<(), Malformed> {
    for _ in 0..get_uvarint(buf)? {
        get_uvarint(buf)?;
        let size = get_uvarint(buf)? as usize;
        if buf.len() < size {
            return Err(Malformed("a tagged field cut short"));
        }
        buf.advance(size);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<DamagedRange> {
        vec![
            DamagedRange {
                kind: DamageKind::Corrupt,
                segment_base_offset: 512,
                position: 4096,
                size_bytes: 1234,
                first_offset: 540,
                last_offset: 559,
            },
            DamagedRange {
                kind: DamageKind::Truncated,
                segment_base_offset: 9000,
                position: 70_000,
                size_bytes: 17,
                first_offset: 9100,
                last_offset: -1,
            },
        ]
    }

    #[test]
    fn ranges_encode_as_the_documented_bytes_and_decode_back() {
        let ranges = sample();
        let bytes = encode(&ranges[..1]);
        let mut want = vec![2u8, 0];
        for field in [512i64, 4096, 1234, 540, 559] {
            want.extend_from_slice(&field.to_be_bytes());
        }
        want.extend_from_slice(&[0, 0]);
        assert_eq!(&bytes[..], &want[..]);
        assert_eq!(decode(&encode(&ranges)).unwrap(), ranges);
        assert_eq!(&encode(&[])[..], &[1, 0]);
        assert_eq!(decode(&[1, 0]).unwrap(), vec![]);
    }

    #[test]
    fn tagged_fields_and_unknown_kinds_from_a_newer_broker_are_read_past() {
        let mut bytes = encode(&sample()[..1]).to_vec();
        bytes[1] = 7;
        // The range's tag buffer: one field, tag 3, two bytes.
        let at = 2 + 5 * 8;
        bytes.splice(at..at + 1, [1, 3, 2, 0xaa, 0xbb]);
        let ranges = decode(&bytes).unwrap();
        assert_eq!(ranges[0].kind, DamageKind::Other(7));
        assert_eq!(ranges[0].last_offset, 559);
    }

    #[test]
    fn malformed_values_are_errors_without_large_allocations() {
        let whole = encode(&sample());
        for len in 0..whole.len() {
            assert!(decode(&whole[..len]).is_err(), "cut at {len}");
        }
        // A count of four billion ranges in six bytes.
        assert!(decode(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0]).is_err());
        assert!(decode(&[0]).is_err(), "a null array");
        let mut longer = whole.to_vec();
        longer.push(0);
        assert!(decode(&longer).is_err(), "trailing bytes");
    }
}
