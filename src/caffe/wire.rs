//! Protobuf wire format over a byte slice, for `.caffemodel` and `.binaryproto` files.
//!
//! Every declared length is checked against the bytes actually left before slicing, so a
//! truncated or hostile file is an error, never a panic or a huge allocation. Offsets in
//! errors count from the start of the outermost buffer.

use anyhow::{anyhow, bail, Result};

/// The largest legal field number (2^29 - 1).
const MAX_FIELD_NUMBER: u64 = (1 << 29) - 1;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WireValue<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WireField<'a> {
    pub number: u32,
    pub value: WireValue<'a>,
    /// Where the field's key starts, from the start of the outermost buffer.
    pub offset: usize,
    /// Where the value starts (after the key and any length prefix).
    pub payload_offset: usize,
}

impl<'a> WireField<'a> {
    /// The payload of a length-delimited field, as a reader that keeps absolute offsets.
    pub fn message(&self) -> Result<Reader<'a>> {
        match self.value {
            WireValue::Bytes(bytes) => Ok(Reader::with_base(bytes, self.payload_offset)),
            _ => Err(self.wrong_type("a length-delimited message")),
        }
    }

    pub fn bytes(&self) -> Result<&'a [u8]> {
        match self.value {
            WireValue::Bytes(bytes) => Ok(bytes),
            _ => Err(self.wrong_type("length-delimited bytes")),
        }
    }

    pub fn string(&self) -> Result<String> {
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| anyhow!("protobuf field {} at byte {}: string is not valid UTF-8", self.number, self.offset))
    }

    pub fn varint(&self) -> Result<u64> {
        match self.value {
            WireValue::Varint(v) => Ok(v),
            _ => Err(self.wrong_type("a varint")),
        }
    }

    /// An `int32`/`int64` field: negative values are sign-extended 10-byte varints.
    pub fn int64(&self) -> Result<i64> {
        Ok(self.varint()? as i64)
    }

    fn wrong_type(&self, expected: &str) -> anyhow::Error {
        let got = match self.value {
            WireValue::Varint(_) => "a varint",
            WireValue::Fixed64(_) => "a 64-bit value",
            WireValue::Bytes(_) => "length-delimited bytes",
            WireValue::Fixed32(_) => "a 32-bit value",
        };
        anyhow!("protobuf field {} at byte {}: expected {expected}, found {got}", self.number, self.offset)
    }
}

/// Reads fields one after another from a message's bytes.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader::with_base(bytes, 0)
    }

    /// A reader whose error offsets are shifted by `base` (the slice's place in the file).
    pub fn with_base(bytes: &'a [u8], base: usize) -> Self {
        Reader { bytes, position: 0, base }
    }

    pub fn is_empty(&self) -> bool {
        self.position >= self.bytes.len()
    }

    /// The absolute offset of the next byte to read.
    pub fn offset(&self) -> usize {
        self.base + self.position
    }

    fn remaining(&self) -> &'a [u8] {
        self.bytes.get(self.position..).unwrap_or(&[])
    }

    pub fn read_varint(&mut self) -> Result<u64> {
        let start = self.offset();
        let mut value = 0u64;
        for (i, &byte) in self.remaining().iter().take(10).enumerate() {
            if i == 9 && byte & 0x80 != 0 {
                bail!("protobuf: varint at byte {start} is longer than 10 bytes");
            }
            // The 10th byte may only carry the top bit of a 64-bit value.
            if i == 9 && byte > 1 {
                bail!("protobuf: varint at byte {start} overflows 64 bits");
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.position += i + 1;
                return Ok(value);
            }
        }
        bail!("protobuf: truncated varint at byte {start} (the data ends at byte {})", self.base + self.bytes.len())
    }

    fn take(&mut self, len: u64, what: &str, field_offset: usize) -> Result<&'a [u8]> {
        let left = self.remaining();
        let len = usize::try_from(len).ok().filter(|&n| n <= left.len()).ok_or_else(|| {
            anyhow!("protobuf: field at byte {field_offset} declares {len} bytes of {what} but only {} remain", left.len())
        })?;
        let (taken, _) = left.split_at(len);
        self.position += len;
        Ok(taken)
    }

    /// The next field, or `None` at the end of the message.
    pub fn read_field(&mut self) -> Result<Option<WireField<'a>>> {
        if self.is_empty() {
            return Ok(None);
        }
        let offset = self.offset();
        let key = self.read_varint()?;
        let number = key >> 3;
        if number == 0 || number > MAX_FIELD_NUMBER {
            bail!("protobuf: invalid field number {number} at byte {offset}");
        }
        let number = number as u32;
        let mut payload_offset = self.offset();
        let value = match key & 7 {
            0 => WireValue::Varint(self.read_varint()?),
            1 => {
                let raw = self.take(8, "a 64-bit value", offset)?;
                WireValue::Fixed64(u64::from_le_bytes(raw.try_into()?))
            }
            2 => {
                let len = self.read_varint()?;
                payload_offset = self.offset();
                WireValue::Bytes(self.take(len, "length-delimited data", offset)?)
            }
            5 => {
                let raw = self.take(4, "a 32-bit value", offset)?;
                WireValue::Fixed32(u32::from_le_bytes(raw.try_into()?))
            }
            3 | 4 => bail!("protobuf: field {number} at byte {offset} uses groups, which are not supported"),
            other => {
                bail!("protobuf: field {number} at byte {offset} has invalid wire type {other}")
            }
        };
        Ok(Some(WireField { number, value, offset, payload_offset }))
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<WireField<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.read_field() {
            Ok(Some(field)) => Some(Ok(field)),
            Ok(None) => None,
            Err(e) => {
                // Stop after an error: the rest of the buffer cannot be framed.
                self.position = self.bytes.len();
                Some(Err(e))
            }
        }
    }
}

/// Appends the values of a repeated numeric field that may be packed (one length-delimited
/// run) or unpacked (one value per field), as protobuf allows either on the wire.
pub fn extend_f32(out: &mut Vec<f32>, field: &WireField<'_>) -> Result<()> {
    match field.value {
        WireValue::Fixed32(bits) => out.push(f32::from_bits(bits)),
        WireValue::Bytes(bytes) => {
            if bytes.len() % 4 != 0 {
                bail!(
                    "protobuf field {} at byte {}: packed floats take {} bytes, not a multiple of 4",
                    field.number,
                    field.offset,
                    bytes.len()
                );
            }
            out.extend(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
        }
        _ => return Err(field.wrong_type("32-bit floats")),
    }
    Ok(())
}

pub fn extend_f64(out: &mut Vec<f64>, field: &WireField<'_>) -> Result<()> {
    match field.value {
        WireValue::Fixed64(bits) => out.push(f64::from_bits(bits)),
        WireValue::Bytes(bytes) => {
            if bytes.len() % 8 != 0 {
                bail!(
                    "protobuf field {} at byte {}: packed doubles take {} bytes, not a multiple of 8",
                    field.number,
                    field.offset,
                    bytes.len()
                );
            }
            out.extend(bytes.chunks_exact(8).map(|c| {
                let mut raw = [0u8; 8];
                raw.copy_from_slice(c);
                f64::from_le_bytes(raw)
            }));
        }
        _ => return Err(field.wrong_type("64-bit floats")),
    }
    Ok(())
}

/// `max_count` bounds the result so a long packed run cannot grow it without limit.
pub fn extend_varints(out: &mut Vec<u64>, field: &WireField<'_>, max_count: usize) -> Result<()> {
    let too_many = || anyhow!("protobuf field {} at byte {}: more than {max_count} values", field.number, field.offset);
    match field.value {
        WireValue::Varint(v) => {
            if out.len() >= max_count {
                return Err(too_many());
            }
            out.push(v);
        }
        WireValue::Bytes(bytes) => {
            let mut reader = Reader::with_base(bytes, field.payload_offset);
            while !reader.is_empty() {
                if out.len() >= max_count {
                    return Err(too_many());
                }
                out.push(reader.read_varint()?);
            }
        }
        _ => return Err(field.wrong_type("varints")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(bytes: &[u8]) -> Result<Vec<WireField<'_>>> {
        Reader::new(bytes).collect()
    }

    #[test]
    fn varints() {
        let mut r = Reader::new(&[0x00, 0x01, 0xac, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(r.read_varint().unwrap(), 0);
        assert_eq!(r.read_varint().unwrap(), 1);
        assert_eq!(r.read_varint().unwrap(), 300);
        assert_eq!(r.read_varint().unwrap(), u64::MAX);
        assert!(r.is_empty());
        // 11 continuation bytes, and a 10th byte with more than the top bit.
        assert!(Reader::new(&[0xff; 11]).read_varint().unwrap_err().to_string().contains("longer than 10 bytes"));
        let overflow = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(Reader::new(&overflow).read_varint().unwrap_err().to_string().contains("overflows"));
        assert!(Reader::new(&[0x80, 0x80]).read_varint().unwrap_err().to_string().contains("truncated varint at byte 0"));
    }

    #[test]
    fn each_wire_type() {
        let mut bytes = vec![0x08, 0x96, 0x01]; // field 1 varint 150
        bytes.extend([0x11, 1, 0, 0, 0, 0, 0, 0, 0]); // field 2 fixed64 1
        bytes.extend([0x1a, 3, b'a', b'b', b'c']); // field 3 bytes "abc"
        bytes.extend([0x25, 0, 0, 0x80, 0x3f]); // field 4 fixed32 1.0f
        let f = fields(&bytes).unwrap();
        assert_eq!(f.len(), 4);
        assert_eq!((f[0].number, f[0].value), (1, WireValue::Varint(150)));
        assert_eq!(f[1].value, WireValue::Fixed64(1));
        assert_eq!(f[2].string().unwrap(), "abc");
        assert_eq!(f[2].offset, 12);
        assert_eq!(f[2].message().unwrap().offset(), 14);
        let mut floats = vec![];
        extend_f32(&mut floats, &f[3]).unwrap();
        assert_eq!(floats, vec![1.0]);
        assert!(f[0].bytes().unwrap_err().to_string().contains("expected length-delimited bytes, found a varint"));
    }

    #[test]
    fn bad_framing_is_an_error() {
        let too_long = [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2];
        assert!(fields(&too_long).unwrap_err().to_string().contains("declares 4294967295 bytes"));
        assert!(fields(&[0x0a, 5, 1, 2]).unwrap_err().to_string().contains("declares 5 bytes"));
        assert!(fields(&[0x09, 1, 2]).is_err());
        assert!(fields(&[0x0d, 1]).is_err());
        assert!(fields(&[0x0b]).unwrap_err().to_string().contains("groups"));
        assert!(fields(&[0x0e]).unwrap_err().to_string().contains("invalid wire type 6"));
        assert!(fields(&[0x00]).unwrap_err().to_string().contains("invalid field number 0"));
    }

    #[test]
    fn packed_and_unpacked_numbers() {
        let packed = [0x0a, 3, 1, 0x96, 0x01];
        let f = fields(&packed).unwrap();
        let mut v = vec![];
        extend_varints(&mut v, &f[0], 32).unwrap();
        assert_eq!(v, vec![1, 150]);
        assert!(extend_varints(&mut vec![], &f[0], 1).is_err());
        let mut d = vec![];
        let doubles = [0x0a, 8, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f];
        extend_f64(&mut d, &fields(&doubles).unwrap()[0]).unwrap();
        assert_eq!(d, vec![1.0]);
        let ragged = [0x0a, 3, 0, 0, 0];
        assert!(extend_f32(&mut vec![], &fields(&ragged).unwrap()[0]).unwrap_err().to_string().contains("multiple of 4"));
    }
}
