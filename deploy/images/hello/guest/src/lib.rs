//! Pure logic of the Nubis `hello` test guest, kept free of the platform so
//! it can be unit tested on the host (`cargo test --lib`): command-line
//! parsing, the MP table, HTTP request parsing and the disk pattern.
//! The freestanding binary (`src/main.rs`) wires it to the machine.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod cmdline;
