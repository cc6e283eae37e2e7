//! Recognises Ctrl-Alt-Del in the i8042 keyboard byte stream, which is how a
//! VMM asks the guest to restart (Firecracker's `SendCtrlAltDel`, nubis-vmm's
//! `ctrl_alt_del`). Both scancode set 2 (what vm-superio and an untranslated
//! i8042 deliver) and set 1 (translated) are tracked, since the guest never
//! programs the controller.

/// Modifier state for one scancode set.
#[derive(Clone, Copy, Debug, Default)]
struct Mods {
    ctrl: bool,
    alt: bool,
    extended: bool,
    release: bool,
}

/// Feeds keyboard bytes; says when Ctrl-Alt-Del was pressed.
#[derive(Clone, Copy, Debug, Default)]
pub struct CtrlAltDel {
    set1: Mods,
    set2: Mods,
}

impl CtrlAltDel {
    /// Takes one byte read from port 0x60; `true` on a Del press while Ctrl
    /// and Alt are held.
    pub fn feed(&mut self, byte: u8) -> bool {
        let a = Self::set2(&mut self.set2, byte);
        let b = Self::set1(&mut self.set1, byte);
        a || b
    }

    fn set2(m: &mut Mods, byte: u8) -> bool {
        match byte {
            0xe0 => {
                m.extended = true;
                return false;
            }
            0xf0 => {
                m.release = true;
                return false;
            }
            _ => {}
        }
        let pressed = !m.release;
        let extended = m.extended;
        m.release = false;
        m.extended = false;
        match (byte, extended) {
            (0x14, _) => m.ctrl = pressed,
            (0x11, _) => m.alt = pressed,
            (0x71, _) => return pressed && m.ctrl && m.alt,
            _ => {}
        }
        false
    }

    fn set1(m: &mut Mods, byte: u8) -> bool {
        if byte == 0xe0 {
            m.extended = true;
            return false;
        }
        m.extended = false;
        let pressed = byte & 0x80 == 0;
        match byte & 0x7f {
            0x1d => m.ctrl = pressed,
            0x38 => m.alt = pressed,
            0x53 => return pressed && m.ctrl && m.alt,
            _ => {}
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(bytes: &[u8]) -> bool {
        let mut k = CtrlAltDel::default();
        let mut hit = false;
        for b in bytes {
            hit |= k.feed(*b);
        }
        hit
    }

    #[test]
    fn set2_sequence_as_vm_superio_sends_it() {
        assert!(any(&[
            0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14
        ]));
    }

    #[test]
    fn set1_sequence() {
        assert!(any(&[0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d]));
    }

    #[test]
    fn del_alone_or_after_release_is_not_cad() {
        assert!(!any(&[0xe0, 0x71]));
        assert!(!any(&[0xe0, 0x53]));
        // Ctrl and Alt released before Del (set 2).
        assert!(!any(&[0x14, 0x11, 0xf0, 0x11, 0xf0, 0x14, 0xe0, 0x71]));
        // Ctrl only (set 1).
        assert!(!any(&[0x1d, 0xe0, 0x53]));
    }
}
