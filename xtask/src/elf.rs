//! Just enough ELF reading to check what a router binary promises: the right machine and
//! byte order, statically linked (no program interpreter), stripped (no symbol table) and,
//! on MIPS, soft-float (the 24Kc routers have no FPU).

/// `e_machine` of x86-64.
pub(crate) const EM_X86_64: u16 = 62;
/// `e_machine` of AArch64.
pub(crate) const EM_AARCH64: u16 = 183;
/// `e_machine` of 32-bit ARM.
pub(crate) const EM_ARM: u16 = 40;
/// `e_machine` of MIPS (either byte order).
pub(crate) const EM_MIPS: u16 = 8;

const PT_INTERP: u32 = 3;
const SHT_SYMTAB: u32 = 2;
const SHT_MIPS_ABIFLAGS: u32 = 0x7000_002a;
/// `fp_abi` value of `.MIPS.abiflags` for soft float.
const VAL_GNU_MIPS_ABI_FP_SOFT: u8 = 3;

/// What an ELF file says about itself.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ElfInfo {
    /// 32 or 64.
    pub(crate) bits: u8,
    /// True for big-endian files.
    pub(crate) big_endian: bool,
    /// `e_machine`.
    pub(crate) machine: u16,
    /// No `PT_INTERP`: runs without a dynamic loader.
    pub(crate) is_static: bool,
    /// No `SHT_SYMTAB` section.
    pub(crate) stripped: bool,
    /// For MIPS: whether `.MIPS.abiflags` says soft float (None if there is no such section).
    pub(crate) mips_soft_float: Option<bool>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    big_endian: bool,
}

impl Reader<'_> {
    fn slice(&self, at: u64, len: usize) -> Result<&[u8], String> {
        let start = usize::try_from(at).map_err(|_| "offset out of range".to_string())?;
        start
            .checked_add(len)
            .and_then(|end| self.bytes.get(start..end))
            .ok_or_else(|| format!("truncated ELF: {len} bytes at offset {at} past the end"))
    }

    fn u8(&self, at: u64) -> Result<u8, String> {
        Ok(self.slice(at, 1)?[0])
    }

    fn u16(&self, at: u64) -> Result<u16, String> {
        let b: [u8; 2] = self.slice(at, 2)?.try_into().expect("length 2");
        Ok(if self.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }

    fn u32(&self, at: u64) -> Result<u32, String> {
        let b: [u8; 4] = self.slice(at, 4)?.try_into().expect("length 4");
        Ok(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn u64(&self, at: u64) -> Result<u64, String> {
        let b: [u8; 8] = self.slice(at, 8)?.try_into().expect("length 8");
        Ok(if self.big_endian {
            u64::from_be_bytes(b)
        } else {
            u64::from_le_bytes(b)
        })
    }

    /// A 32- or 64-bit address-sized field.
    fn word(&self, bits: u8, at: u64) -> Result<u64, String> {
        if bits == 64 {
            self.u64(at)
        } else {
            self.u32(at).map(u64::from)
        }
    }
}

/// True if `bytes` starts with the ELF magic.
pub(crate) fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

/// Reads the header, program headers and section headers of an ELF file.
pub(crate) fn inspect(bytes: &[u8]) -> Result<ElfInfo, String> {
    if !is_elf(bytes) {
        return Err("not an ELF file".into());
    }
    let bits = match bytes.get(4) {
        Some(1) => 32,
        Some(2) => 64,
        other => return Err(format!("unknown ELF class {other:?}")),
    };
    let big_endian = match bytes.get(5) {
        Some(1) => false,
        Some(2) => true,
        other => return Err(format!("unknown ELF data encoding {other:?}")),
    };
    let r = Reader { bytes, big_endian };
    let machine = r.u16(18)?;
    // Offsets of the header fields differ between ELF32 and ELF64.
    let (phoff, shoff, sizes) = if bits == 64 {
        (r.u64(32)?, r.u64(40)?, 54)
    } else {
        (u64::from(r.u32(28)?), u64::from(r.u32(32)?), 42)
    };
    let phentsize = u64::from(r.u16(sizes)?);
    let phnum = u64::from(r.u16(sizes + 2)?);
    let shentsize = u64::from(r.u16(sizes + 4)?);
    let shnum = u64::from(r.u16(sizes + 6)?);

    let mut is_static = true;
    for i in 0..phnum {
        if r.u32(phoff + i * phentsize)? == PT_INTERP {
            is_static = false;
        }
    }
    let mut stripped = true;
    let mut mips_soft_float = None;
    for i in 0..shnum {
        let header = shoff + i * shentsize;
        match r.u32(header + 4)? {
            SHT_SYMTAB => stripped = false,
            SHT_MIPS_ABIFLAGS => {
                // sh_offset follows sh_name, sh_type and sh_flags (a word).
                let flags_size = if bits == 64 { 8 } else { 4 };
                let offset = r.word(bits, header + 8 + flags_size + u64::from(bits / 8))?;
                // Elf_MIPS_ABIFlags_v0: version u16, isa_level, isa_rev, gpr_size,
                // cpr1_size, cpr2_size, fp_abi (u8 each).
                mips_soft_float = Some(r.u8(offset + 7)? == VAL_GNU_MIPS_ABI_FP_SOFT);
            }
            _ => {}
        }
    }
    Ok(ElfInfo {
        bits,
        big_endian,
        machine,
        is_static,
        stripped,
        mips_soft_float,
    })
}

/// Builds a minimal ELF image, for tests of the code that reads them.
#[cfg(test)]
pub(crate) mod synth {
    /// Options of a synthetic ELF file.
    pub(crate) struct Synth {
        pub(crate) bits: u8,
        pub(crate) big_endian: bool,
        pub(crate) machine: u16,
        pub(crate) interp: bool,
        pub(crate) symtab: bool,
        /// Some(fp_abi) adds a .MIPS.abiflags section.
        pub(crate) mips_fp_abi: Option<u8>,
    }

    impl Synth {
        /// A stripped static executable for `machine`.
        pub(crate) fn new(bits: u8, big_endian: bool, machine: u16) -> Self {
            Synth {
                bits,
                big_endian,
                machine,
                interp: false,
                symtab: false,
                mips_fp_abi: None,
            }
        }

        /// The bytes: header, one program header, section headers, abiflags payload.
        pub(crate) fn build(&self) -> Vec<u8> {
            let be = self.big_endian;
            let w16 = |v: u16| {
                if be {
                    v.to_be_bytes().to_vec()
                } else {
                    v.to_le_bytes().to_vec()
                }
            };
            let w32 = |v: u32| {
                if be {
                    v.to_be_bytes().to_vec()
                } else {
                    v.to_le_bytes().to_vec()
                }
            };
            let word = |v: u64| {
                if self.bits == 64 {
                    if be {
                        v.to_be_bytes().to_vec()
                    } else {
                        v.to_le_bytes().to_vec()
                    }
                } else {
                    w32(v as u32)
                }
            };
            let (ehsize, phentsize, shentsize) = if self.bits == 64 {
                (64u64, 56u64, 64u64)
            } else {
                (52, 32, 40)
            };
            let mut sections: Vec<u32> = vec![0];
            if self.symtab {
                sections.push(super::SHT_SYMTAB);
            }
            if self.mips_fp_abi.is_some() {
                sections.push(super::SHT_MIPS_ABIFLAGS);
            }
            let phoff = ehsize;
            let shoff = phoff + phentsize;
            let payload = shoff + shentsize * sections.len() as u64;

            let mut out = vec![
                0x7f,
                b'E',
                b'L',
                b'F',
                if self.bits == 64 { 2 } else { 1 },
                if be { 2 } else { 1 },
                1,
            ];
            out.resize(16, 0);
            out.extend(w16(2)); // ET_EXEC
            out.extend(w16(self.machine));
            out.extend(w32(1));
            out.extend(word(0)); // entry
            out.extend(word(phoff));
            out.extend(word(shoff));
            out.extend(w32(0)); // flags
            out.extend(w16(ehsize as u16));
            out.extend(w16(phentsize as u16));
            out.extend(w16(1));
            out.extend(w16(shentsize as u16));
            out.extend(w16(sections.len() as u16));
            out.extend(w16(0));
            assert_eq!(out.len() as u64, ehsize);

            let mut ph = w32(if self.interp { super::PT_INTERP } else { 1 });
            ph.resize(phentsize as usize, 0);
            out.extend(ph);

            for sh_type in &sections {
                let mut sh = w32(0); // name
                sh.extend(w32(*sh_type));
                sh.extend(word(0)); // flags
                sh.extend(word(0)); // addr
                sh.extend(word(if *sh_type == super::SHT_MIPS_ABIFLAGS {
                    payload
                } else {
                    0
                }));
                sh.resize(shentsize as usize, 0);
                out.extend(sh);
            }
            if let Some(fp_abi) = self.mips_fp_abi {
                out.extend(w16(0));
                out.extend([32, 2, 1, 0, 0, fp_abi]);
                out.resize(out.len() + 16, 0);
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::synth::Synth;
    use super::*;

    #[test]
    fn reads_64_bit_static_stripped() {
        let info = inspect(&Synth::new(64, false, EM_X86_64).build()).unwrap();
        assert_eq!(
            info,
            ElfInfo {
                bits: 64,
                big_endian: false,
                machine: EM_X86_64,
                is_static: true,
                stripped: true,
                mips_soft_float: None
            }
        );
    }

    #[test]
    fn finds_interpreter_and_symbols() {
        let mut synth = Synth::new(64, false, EM_AARCH64);
        synth.interp = true;
        synth.symtab = true;
        let info = inspect(&synth.build()).unwrap();
        assert!(!info.is_static);
        assert!(!info.stripped);
    }

    #[test]
    fn reads_mips_float_abi_in_both_byte_orders() {
        for big_endian in [false, true] {
            let mut synth = Synth::new(32, big_endian, EM_MIPS);
            synth.mips_fp_abi = Some(VAL_GNU_MIPS_ABI_FP_SOFT);
            let info = inspect(&synth.build()).unwrap();
            assert_eq!(
                (info.bits, info.big_endian, info.machine),
                (32, big_endian, EM_MIPS)
            );
            assert_eq!(info.mips_soft_float, Some(true));
            synth.mips_fp_abi = Some(1); // double-precision hard float
            assert_eq!(
                inspect(&synth.build()).unwrap().mips_soft_float,
                Some(false)
            );
        }
    }

    #[test]
    fn rejects_non_elf_and_truncated_files() {
        assert_eq!(inspect(b"#!/bin/sh\n").unwrap_err(), "not an ELF file");
        let bytes = Synth::new(32, false, EM_ARM).build();
        let err = inspect(&bytes[..40]).unwrap_err();
        assert!(err.contains("truncated ELF"), "{err}");
    }
}
