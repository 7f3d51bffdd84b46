//! What a cubin (a CUDA ELF image) records about its kernels, read from the file itself as a
//! cross-check of ptxas's log: each kernel's register count (`EIATTR_REGCOUNT` in `.nv.info`),
//! its `__launch_bounds__` (`EIATTR_MAX_THREADS` in `.nv.info.<kernel>`) and the size of its
//! static shared memory section (`.nv.shared.<kernel>`). Attribute records are
//! `format: u8, attribute: u8, u16` where the u16 is padding (EIFMT_NVAL), the value
//! (EIFMT_BVAL, EIFMT_HVAL) or the size of the value that follows (EIFMT_SVAL), as
//! `cuobjdump -elf` decodes them.

use anyhow::{bail, Context, Result};

const EIATTR_MAX_THREADS: u8 = 0x05;
const EIATTR_REGCOUNT: u8 = 0x2f;
const EIFMT_NVAL: u8 = 0x01;
const EIFMT_SVAL: u8 = 0x04;

/// One kernel (entry function) of a cubin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CubinKernel {
    pub name: String,
    pub registers: Option<u32>,
    /// Threads per block of its `__launch_bounds__`, when it has one.
    pub max_threads: Option<u32>,
    /// Bytes of its `.nv.shared.<name>` section (0 when it has none).
    pub shared_section: u32,
}

/// The kernels of `cubin` and whether it reserves shared memory at the start of each CTA's
/// window (`.nv.shared.reserved.0`, sm_90: the kernels' shared sections then include the
/// driver's 1 KB reservation).
pub fn kernels(cubin: &[u8]) -> Result<(Vec<CubinKernel>, bool)> {
    let elf = Elf::parse(cubin).context("the cubin is not a 64-bit little-endian ELF")?;
    let symbols = elf.symbol_names()?;
    let mut out = Vec::new();
    let mut registers = Vec::new();
    for s in &elf.sections {
        let name = elf.section_name(s)?;
        if name == ".nv.info" {
            for (attr, value) in attributes(elf.data(s)?)? {
                if attr == EIATTR_REGCOUNT && value.len() >= 8 {
                    registers.push((u32_at(value, 0)? as usize, u32_at(value, 4)?));
                }
            }
        } else if let Some(kernel) = name.strip_prefix(".nv.info.") {
            let bounds = attributes(elf.data(s)?)?.into_iter().find(|(a, v)| *a == EIATTR_MAX_THREADS && v.len() >= 12);
            let max_threads = match bounds {
                Some((_, v)) => Some(u32_at(v, 0)? * u32_at(v, 4)? * u32_at(v, 8)?),
                None => None,
            };
            out.push(CubinKernel { name: kernel.to_string(), registers: None, max_threads, shared_section: 0 });
        }
    }
    for s in &elf.sections {
        if let Some(kernel) = elf.section_name(s)?.strip_prefix(".nv.shared.") {
            if let Some(k) = out.iter_mut().find(|k| k.name == kernel) {
                k.shared_section = u32::try_from(s.size).context("shared section size")?;
            }
        }
    }
    for (symbol, count) in registers {
        let name = symbols.get(symbol).with_context(|| format!("EIATTR_REGCOUNT names symbol {symbol}, past the symbol table"))?;
        if let Some(k) = out.iter_mut().find(|k| &k.name == name) {
            k.registers = Some(count);
        }
    }
    let reserves = elf.sections.iter().any(|s| elf.section_name(s).is_ok_and(|n| n == ".nv.shared.reserved.0"));
    Ok((out, reserves))
}

/// (attribute, value bytes) of each record of a `.nv.info` section.
fn attributes(mut b: &[u8]) -> Result<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (format, attr, half) = (b[0], *b.get(1).unwrap_or(&0), u16_at(b, 2).context("an attribute runs past its section")?);
        let (value, len) = match format {
            EIFMT_NVAL => (&b[4..4], 4),
            EIFMT_SVAL => (b.get(4..4 + half as usize).context("an attribute runs past its section")?, 4 + half as usize),
            _ => (&b[2..4], 4),
        };
        out.push((attr, value));
        b = &b[len..];
    }
    Ok(out)
}

fn bytes<const N: usize>(b: &[u8], at: usize) -> Result<[u8; N]> {
    at.checked_add(N)
        .and_then(|end| b.get(at..end))
        .and_then(|s| s.try_into().ok())
        .with_context(|| format!("{N} bytes at {at} run past the end ({})", b.len()))
}

fn u16_at(b: &[u8], at: usize) -> Result<u16> {
    Ok(u16::from_le_bytes(bytes(b, at)?))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    Ok(u32::from_le_bytes(bytes(b, at)?))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64> {
    Ok(u64::from_le_bytes(bytes(b, at)?))
}

struct Section {
    name: u32,
    kind: u32,
    offset: u64,
    size: u64,
    link: u32,
}

struct Elf<'a> {
    bytes: &'a [u8],
    sections: Vec<Section>,
    names: usize,
}

const SHT_SYMTAB: u32 = 2;
const SHT_NOBITS: u32 = 8;

impl<'a> Elf<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Elf<'a>> {
        if bytes.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
            bail!("no ELF64 little-endian header");
        }
        let (shoff, shentsize, shnum) = (u64_at(bytes, 0x28)? as usize, u16_at(bytes, 0x3a)? as usize, u16_at(bytes, 0x3c)? as usize);
        let names = u16_at(bytes, 0x3e)? as usize;
        if shentsize < 64 || names >= shnum {
            bail!("section header table of {shnum} entries of {shentsize} bytes, names in {names}");
        }
        let mut sections = Vec::with_capacity(shnum);
        for i in 0..shnum {
            let h = shoff.checked_add(i * shentsize).context("section headers past the end")?;
            sections.push(Section {
                name: u32_at(bytes, h)?,
                kind: u32_at(bytes, h + 4)?,
                offset: u64_at(bytes, h + 0x18)?,
                size: u64_at(bytes, h + 0x20)?,
                link: u32_at(bytes, h + 0x28)?,
            });
        }
        Ok(Elf { bytes, sections, names })
    }

    fn data(&self, s: &Section) -> Result<&'a [u8]> {
        if s.kind == SHT_NOBITS {
            return Ok(&[]);
        }
        let (start, len) = (usize::try_from(s.offset)?, usize::try_from(s.size)?);
        self.bytes.get(start..start.saturating_add(len)).context("a section runs past the end of the file")
    }

    fn string(&self, table: usize, at: u32) -> Result<&'a str> {
        let t = self.data(self.sections.get(table).context("no such string table")?)?;
        let s = t.get(at as usize..).context("a name past its string table")?;
        let end = s.iter().position(|&c| c == 0).context("an unterminated name")?;
        Ok(std::str::from_utf8(&s[..end])?)
    }

    fn section_name(&self, s: &Section) -> Result<&'a str> {
        self.string(self.names, s.name)
    }

    /// The names of the symbol table's entries, by index.
    fn symbol_names(&self) -> Result<Vec<&'a str>> {
        let Some(symtab) = self.sections.iter().find(|s| s.kind == SHT_SYMTAB) else { return Ok(Vec::new()) };
        let data = self.data(symtab)?;
        (0..data.len() / 24).map(|i| self.string(symtab.link as usize, u32_at(data, i * 24)?)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_records_are_split_by_format() {
        // NVAL 0x2a (padded to 4 bytes); HVAL 0x1b = 255; SVAL 0x05 = (64, 1, 1); BVAL 0x4c = 1.
        let mut b = vec![0x01, 0x2a, 0, 0, 0x03, 0x1b, 0xff, 0x00, 0x04, 0x05, 12, 0];
        for v in [64u32, 1, 1] {
            b.extend(v.to_le_bytes());
        }
        b.extend([0x02, 0x4c, 0x01, 0x00]);
        let a = attributes(&b).unwrap();
        assert_eq!(a.len(), 4);
        assert_eq!(a[0], (0x2a, &[][..]));
        assert_eq!(a[1], (0x1b, &[0xff, 0][..]));
        assert_eq!((a[2].0, a[2].1.len()), (EIATTR_MAX_THREADS, 12));
        assert_eq!(a[3], (0x4c, &[1, 0][..]));
        // A record that runs past its section is an error, not a panic.
        assert!(attributes(&[0x04, 0x2f, 8, 0, 1, 2]).is_err());
    }

    #[test]
    fn what_is_not_an_elf_is_an_error() {
        assert!(kernels(b"").is_err());
        assert!(kernels(b"\x7fELF\x02\x01 and then nothing").is_err());
    }
}
