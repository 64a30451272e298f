//! The many-instances hostile guest (guests/testing/many-instances): the
//! built hostile component with `count` extra core instances of
//! `grow.wat` appended, each growing its own memory by `pages` pages.

use super::{guest, root};

/// Component section ids (the component model's binary format).
const CORE_MODULE_SECTION: u8 = 0x01;
const CORE_INSTANCE_SECTION: u8 = 0x02;

fn leb(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn read_leb(bytes: &[u8], at: &mut usize) -> u64 {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let byte = bytes[*at];
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return v;
        }
        shift += 7;
    }
}

fn section(id: u8, content: &[u8], out: &mut Vec<u8>) {
    out.push(id);
    leb(content.len() as u64, out);
    out.extend_from_slice(content);
}

/// Core modules defined at the top level of a component: one per core
/// module section (the components built here define no others).
fn core_module_count(component: &[u8]) -> u32 {
    let mut at = 8; // magic + version + layer
    let mut count = 0;
    while at < component.len() {
        let id = component[at];
        at += 1;
        let len = read_leb(component, &mut at) as usize;
        if id == CORE_MODULE_SECTION {
            count += 1;
        }
        at += len;
    }
    count
}

pub fn many_instances(count: u32, pages: u32) -> Vec<u8> {
    let mut component = guest("test-guest-hostile");
    let wat = std::fs::read_to_string(root().join("guests/testing/many-instances/grow.wat"))
        .expect("grow.wat");
    let module =
        wat::parse_str(wat.replace("PAGES", &pages.to_string())).expect("grow.wat assembles");
    let index = core_module_count(&component);
    section(CORE_MODULE_SECTION, &module, &mut component);
    let mut instances = Vec::new();
    leb(u64::from(count), &mut instances);
    for _ in 0..count {
        instances.push(0x00); // instantiate a module...
        leb(u64::from(index), &mut instances); // ...this one...
        leb(0, &mut instances); // ...with no imports
    }
    section(CORE_INSTANCE_SECTION, &instances, &mut component);
    component
}
