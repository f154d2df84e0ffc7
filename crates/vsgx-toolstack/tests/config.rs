//! Guest config files end to end: the xl.cfg grammar, every error with its exact line:column,
//! warnings for keys vsgx does not use, the example configs, and robustness against any input.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use vsgx_isa::cpuid::EpcSectionLeaf;
use vsgx_toolstack::config::{
    Action, ConfigError, EpcPolicy, GuestConfig, GuestType, Location, Parsed, Uuid, Value, ValueKind, XlConfig,
};
use vsgx_toolstack::host::HostInfo;
use vsgx_toolstack::layout::MemoryType;

const MIB: u64 = 1 << 20;

fn host() -> HostInfo {
    HostInfo::embedded()
}

fn xl(text: &str) -> XlConfig {
    XlConfig::parse("g.cfg", text).unwrap_or_else(|e| panic!("{e}"))
}

fn guest(text: &str) -> Parsed {
    GuestConfig::parse("g.cfg", text, &host()).unwrap_or_else(|e| panic!("{e}"))
}

/// The error a config gives, as displayed.
fn error(text: &str) -> String {
    match GuestConfig::parse("g.cfg", text, &host()) {
        Ok(p) => format!("no error: {:?}", p.config),
        Err(e) => e.to_string(),
    }
}

fn value(text: &str, key: &str) -> Value {
    xl(text).get(key).map(|s| s.value.clone()).unwrap_or_else(|| panic!("{key} is not set"))
}

fn n(v: u64) -> Value {
    Value::new(ValueKind::Number(v), Location::START)
}

fn s(v: &str) -> Value {
    Value::new(ValueKind::String(v.into()), Location::START)
}

fn l(items: Vec<Value>) -> Value {
    Value::new(ValueKind::List(items), Location::START)
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/guests")
}

// ---- grammar ----------------------------------------------------------------------------------

#[test]
fn comments_semicolons_and_blank_lines() {
    let c = xl("# a comment\n\n  name = \"a\" ; memory = 512 # trailing comment\n;;\nvcpus=2;\n\tepc = 0x40");
    assert_eq!(c.get("name").map(|s| &s.value), Some(&s("a")));
    assert_eq!(c.get("memory").map(|s| &s.value), Some(&n(512)));
    assert_eq!(c.get("vcpus").map(|s| &s.value), Some(&n(2)));
    assert_eq!(c.get("epc").map(|s| &s.value), Some(&n(64)), "the last statement needs no newline");
    assert_eq!(c.get("memory").map(|s| s.at), Some(Location::new(3, 16)));
    assert_eq!(c.get("memory").map(|s| s.value.at), Some(Location::new(3, 25)));
    // '#' inside a string is text, not a comment; CRLF line ends read like LF.
    let c = xl("extra = \"console=hvc0 # not a comment\"\r\nkernel = '/boot/vmlinuz'\r\n");
    assert_eq!(c.get("extra").map(|s| &s.value), Some(&s("console=hvc0 # not a comment")));
    assert_eq!(c.get("kernel").map(|s| &s.value), Some(&s("/boot/vmlinuz")));
    assert_eq!(xl("").settings().len(), 0);
    assert_eq!(xl("# only a comment").settings().len(), 0);
}

#[test]
fn keys_may_hold_dots_digits_and_underscores() {
    let c = xl("device_model_version = 'qemu-xen'\nvga.kind = \"std\"\ncpuid.0 = 1\n");
    let keys: Vec<&str> = c.settings().iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["device_model_version", "vga.kind", "cpuid.0"]);
}

#[test]
fn nested_lists_over_several_lines_with_trailing_commas() {
    let v =
        value("cpuid = [\n  # leaf 1\n  [ 1, 'eax=0x1' ],\n\n  [ [ ], [ 2, [ 3, ], ], ],\n  \"last\",\n]\n", "cpuid");
    assert_eq!(v, l(vec![l(vec![n(1), s("eax=0x1")]), l(vec![l(vec![]), l(vec![n(2), l(vec![n(3)])])]), s("last")]));
    let items = v.as_list().unwrap_or_default();
    assert_eq!(
        items.iter().map(|i| i.at).collect::<Vec<_>>(),
        [Location::new(3, 3), Location::new(5, 3), Location::new(6, 3)]
    );
    assert_eq!(value("x = []", "x"), l(vec![]));
    assert_eq!(value("x = [\n]", "x"), l(vec![]));
}

#[test]
fn a_later_assignment_wins() {
    let c = xl("memory = 512\nname = 'a'\nmemory = 1024\n");
    assert_eq!(c.get("memory").map(|s| &s.value), Some(&n(1024)));
    assert_eq!(c.get("memory").map(|s| s.at), Some(Location::new(3, 1)), "the location is the last assignment's");
    let keys: Vec<&str> = c.settings().iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["memory", "name"], "keys keep the order they first appear in");
    assert_eq!(value("x = [1, 2]\nx = 'y'", "x"), s("y"));
    assert_eq!(guest("name = 'a'\nepc = 8\nepc = 16\n").config.epc_bytes(), 16 * MIB);
}

#[test]
fn plus_equals_appends() {
    // To a list: a list is concatenated, anything else becomes the last item.
    assert_eq!(value("disk = ['a']\ndisk += ['b', 'c']", "disk"), l(vec![s("a"), s("b"), s("c")]));
    assert_eq!(value("disk = ['a']\ndisk += 'b'", "disk"), l(vec![s("a"), s("b")]));
    assert_eq!(value("disk = ['a']\ndisk += [['b']]", "disk"), l(vec![s("a"), l(vec![s("b")])]));
    // Nothing before: as `=`.
    assert_eq!(value("disk += ['a']", "disk"), l(vec![s("a")]));
    assert_eq!(value("extra += 'quiet'", "extra"), s("quiet"));
    // Strings are concatenated, as xl does.
    assert_eq!(value("extra = 'console=hvc0'\nextra += ' quiet'", "extra"), s("console=hvc0 quiet"));
    // Anything else makes a list.
    assert_eq!(value("x = 1\nx += 2", "x"), l(vec![n(1), n(2)]));
    assert_eq!(value("x = 'a'\nx += [1, 2]", "x"), l(vec![s("a"), n(1), n(2)]));
    assert_eq!(value("x = 1\nx += 'a'\nx += 'b'", "x"), l(vec![n(1), s("a"), s("b")]));
    // `=` after `+=` starts over.
    assert_eq!(value("x = [1]\nx += 2\nx = [3]", "x"), l(vec![n(3)]));
    // Items keep their own locations, so errors point into the right line.
    assert_eq!(
        error("name = 'a'\nepc_sections = [ 'size=8' ]\nepc_sections += 'size=8,node=5'\n"),
        "g.cfg:3:30: epc_sections[1]: NUMA node 5 has no EPC on this host (nodes with EPC: 0, 1)"
    );
    // `sgx` built in two steps.
    let p = guest("name = 'a'\nsgx = 'epc=16'\nsgx += ',lewr=0'\n");
    assert_eq!((p.config.epc_bytes(), p.config.lewr), (16 * MIB, Some(false)));
}

#[test]
fn strings_numbers_and_escapes() {
    assert_eq!(value(r#"x = "tab\there \"q\" \\ \x41\102 it\'s""#, "x"), s("tab\there \"q\" \\ AB it's"));
    assert_eq!(value(r#"x = 'say "hi"'"#, "x"), s("say \"hi\""));
    assert_eq!(value("x = 'ünïcødé'", "x"), s("ünïcødé"));
    assert_eq!(value("x = 0", "x"), n(0));
    assert_eq!(value("x = 0xffffffffffffffff", "x"), n(u64::MAX));
    assert_eq!(value("x = 18446744073709551615", "x"), n(u64::MAX));
}

#[test]
fn round_trip_through_display() {
    let text = "name = \"w\\\"eb\" # c\nmemory=512;vcpus = 0x2\ndisk = [ 'a',\n 'b\\n', [1, []], ]\n\
                extra = 'x'\nextra += 'y'\nctl = \"\\x01\\x7f\"\n";
    let first = xl(text);
    let printed = first.to_string();
    assert_eq!(
        printed,
        "name = \"w\\\"eb\"\nmemory = 512\nvcpus = 2\ndisk = [ \"a\", \"b\\n\", [ 1, [] ] ]\nextra = \"xy\"\n\
         ctl = \"\\x01\\x7f\"\n"
    );
    let second = XlConfig::parse("g.cfg", &printed).unwrap_or_else(|e| panic!("{e}"));
    let pairs = |c: &XlConfig| c.settings().iter().map(|s| (s.key.clone(), s.value.clone())).collect::<Vec<_>>();
    assert_eq!(pairs(&second), pairs(&first), "same keys and values (locations differ)");
    assert_eq!(second.to_string(), printed);
}

// ---- syntax errors, each at its exact line:column ---------------------------------------------

#[test]
fn syntax_errors_name_line_column_and_what_was_expected() {
    let key =
        "a key (a lowercase letter, then lowercase letters, digits, '.' or '_'), a comment or the end of the line";
    let value = "a value: a string (\"…\" or '…'), a number or a list ([…])";
    let cases: Vec<(&str, String)> = vec![
        ("Name = \"x\"\n", format!("g.cfg:1:1: expected {key}, found 'N'")),
        ("name = 'x'\n  -vcpus = 2\n", format!("g.cfg:2:3: expected {key}, found '-'")),
        ("memory 512\n", "g.cfg:1:8: expected '=' or '+=' after the key `memory`, found '5'".into()),
        ("memory\n= 512\n", "g.cfg:1:7: expected '=' or '+=' after the key `memory`, found end of line".into()),
        ("memory + = 1\n", "g.cfg:1:8: expected '=' or '+=' after the key `memory`, found '+'".into()),
        ("memory =\n", format!("g.cfg:1:9: expected {value}, found end of line")),
        ("memory = # none\n", format!("g.cfg:1:10: expected {value}, found '#'")),
        ("name = web\n", format!("g.cfg:1:8: expected {value}, found 'w'")),
        (
            "memory = 512 MB\n",
            "g.cfg:1:14: expected ';', a comment or the end of the line after the value of `memory`, found 'M'".into(),
        ),
        (
            "name = \"web\nmemory = 1\n",
            "g.cfg:1:12: expected \" to close the string that starts at 1:8 (strings end on the line they start), \
             found end of line"
                .into(),
        ),
        (
            "name = 'web",
            "g.cfg:1:12: expected ' to close the string that starts at 1:8 (strings end on the line they start), \
             found end of file"
                .into(),
        ),
        ("disk = [ 'a' 'b' ]\n", "g.cfg:1:14: expected ',' or ']' in the list that starts at 1:8, found '\\''".into()),
        (
            "vif = [ 'a',\n  'b'\n",
            "g.cfg:3:1: expected ',' or ']' in the list that starts at 1:7, found end of file".into(),
        ),
        ("vif = [ , ]\n", "g.cfg:1:9: expected a value or ']' to close the list that starts at 1:7, found ','".into()),
        ("x = [ 1,, ]\n", "g.cfg:1:9: expected a value or ']' to close the list that starts at 1:5, found ','".into()),
        (
            "memory = 12ab\n",
            "g.cfg:1:10: expected a number: decimal digits, or 0x and lowercase hex digits, found `12ab`".into(),
        ),
        (
            "memory = 1e3\n",
            "g.cfg:1:10: expected a number: decimal digits, or 0x and lowercase hex digits, found `1e3`".into(),
        ),
        (
            "memory = 0x\n",
            "g.cfg:1:10: expected a number: decimal digits, or 0x and lowercase hex digits, found `0x`".into(),
        ),
        (
            "memory = 0xAB\n",
            "g.cfg:1:10: expected a number: decimal digits, or 0x and lowercase hex digits, found `0xAB`".into(),
        ),
        (
            "vcpus = 010\n",
            "g.cfg:1:9: expected a decimal number without leading zeros (xl would read this as octal: write it in \
             decimal or 0x hex), found `010`"
                .into(),
        ),
        (
            "memory = 18446744073709551616\n",
            "g.cfg:1:10: expected a number at most 18446744073709551615 (0xffffffffffffffff), found \
             `18446744073709551616`"
                .into(),
        ),
        (
            "x = 'a\\qb'\n",
            "g.cfg:1:8: expected an escape after '\\': one of \\\" \\' \\\\ \\a \\b \\f \\n \\r \\t \\v, \\x and \
          two hex digits, or one to three octal digits (at most \\377), found 'q'"
                .into(),
        ),
        ("x = '\\xg0'\n", "g.cfg:1:8: expected two hex digits after '\\x', found 'g'".into()),
        ("x = '\\400'\n", "g.cfg:1:6: expected an octal escape at most \\377, found `\\400`".into()),
        (
            "x = 'a\\",
            "g.cfg:1:8: expected an escape after '\\': one of \\\" \\' \\\\ \\a \\b \\f \\n \\r \\t \\v, \\x and \
          two hex digits, or one to three octal digits (at most \\377), found end of file"
                .into(),
        ),
        (
            "\n\n  x = 1 y = 2\n",
            "g.cfg:3:9: expected ';', a comment or the end of the line after the value of `x`, found 'y'".into(),
        ),
        ("name = 'é' ; ü = 1\n", format!("g.cfg:1:14: expected {key}, found 'ü'")),
    ];
    for (text, expected) in cases {
        assert_eq!(error(text), expected, "config: {text:?}");
    }
    let deep = format!("x = {}{}", "[".repeat(40), "]".repeat(40));
    assert_eq!(error(&deep), "g.cfg:1:37: expected at most 32 levels of nested lists, found '['");
    let ok = format!("x = {}{}", "[".repeat(32), "]".repeat(32));
    assert!(XlConfig::parse("g.cfg", &ok).is_ok());
}

// ---- validation errors, each at the offending value -------------------------------------------

#[test]
fn validation_errors_point_at_the_offending_value() {
    let cases: Vec<(&str, &str)> = vec![
        // Required and typed keys.
        ("memory = 512\n", "g.cfg:1:1: missing required key `name`: every guest needs one, e.g. name = \"guest1\""),
        ("name = 5\n", "g.cfg:1:8: name: expected a string, found a number"),
        ("name = 'a'\nmemory = '512'\n", "g.cfg:2:10: memory: expected a number, found a string"),
        ("name = 'a'\nvcpus = [2]\n", "g.cfg:2:9: vcpus: expected a number, found a list"),
        (
            "name = 'a'\nepc_sections = 'size=8'\n",
            "g.cfg:2:16: epc_sections: expected a list of strings, found a string",
        ),
        (
            "name = 'a'\nepc_sections = [ 8 ]\n",
            "g.cfg:2:18: epc_sections[0]: expected a string such as \"size=64,node=0\", found a number",
        ),
        // Values.
        (
            "name = 'my guest'\n",
            "g.cfg:1:8: name: expected 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit and \
             not all digits (a domain is named by its name or its id), found \"my guest\"",
        ),
        (
            "name = '42'\n",
            "g.cfg:1:8: name: expected 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit and \
             not all digits (a domain is named by its name or its id), found \"42\"",
        ),
        (
            "name = 'a'\nuuid = '3f9c2a1e-7b64-4d2e-9a51-0c8e6f4b2d1'\n",
            "g.cfg:2:8: uuid: expected a UUID: 8-4-4-4-12 hex digits, found \"3f9c2a1e-7b64-4d2e-9a51-0c8e6f4b2d1\"",
        ),
        (
            "name = 'a'\ntype = 'pv'\n",
            "g.cfg:2:8: type: expected \"hvm\" or \"pvh\" (vsgx runs no PV guests), found \"pv\"",
        ),
        (
            "name = 'a'\non_crash = 'reboot'\n",
            "g.cfg:2:12: on_crash: expected one of destroy, restart, rename-restart, preserve, coredump-destroy, \
             coredump-restart, soft-reset, found \"reboot\"",
        ),
        ("name = 'a'\nsgx_provision = 2\n", "g.cfg:2:17: sgx_provision: expected 0 or 1, found `2`"),
        ("name = 'a'\nvcpus = 0\n", "g.cfg:2:9: vcpus = 0: must be from 1 to 128"),
        ("name = 'a'\nmemory = 0\n", "g.cfg:2:10: memory = 0: must be from 1 to 1048574 MiB"),
        ("name = 'a'\nmmio_hole = 128\n", "g.cfg:2:13: mmio_hole = 128: must be from 256 to 3840 MiB"),
        (
            "name = 'a'\nmemory = 1024\nmaxmem = 512\n",
            "g.cfg:3:10: maxmem = 512: must be from 1024 to 1048574 MiB (at least `memory`)",
        ),
        // Policies.
        (
            "name = 'a'\nepc = 8\nepc_policy = 'oversubscribe'\n",
            "g.cfg:3:14: epc_policy = \"oversubscribe\": not built yet; the policies that exist are: static",
        ),
        (
            "name = 'a'\nepc_policy = \"balloon\"\n",
            "g.cfg:2:14: epc_policy = \"balloon\": not built yet; the policies that exist are: static",
        ),
        (
            "name = 'a'\nepc_policy = 'dynamic'\n",
            "g.cfg:2:14: epc_policy = \"dynamic\": there is no such policy; the policies that exist are: static",
        ),
        // NUMA nodes, sizes and bases inside option strings: the column is the option value's.
        (
            "name = 'a'\nepc_sections = [ 'size=8,node=0', 'size=8,node=7' ]\n",
            "g.cfg:2:48: epc_sections[1]: NUMA node 7 has no EPC on this host (nodes with EPC: 0, 1)",
        ),
        (
            "name = 'a'\nepc_sections = [ 'size=1536K' ]\n",
            "g.cfg:2:24: epc_sections[0]: 0x180000 bytes is not a whole, non-zero number of MiB (EPC sections are \
             sized in whole MiB)",
        ),
        (
            "name = 'a'\nepc_sections = [ 'size=0' ]\n",
            "g.cfg:2:24: epc_sections[0]: 0 MiB is not a whole, non-zero number of MiB (EPC sections are sized in \
             whole MiB)",
        ),
        (
            "name = 'a'\nsgx = 'epc=1025K'\n",
            "g.cfg:2:12: sgx epc: 0x100400 bytes is not a whole, non-zero number of MiB (EPC sections are sized in \
             whole MiB)",
        ),
        (
            "name = 'a'\nepc_sections = [ 'size=eight' ]\n",
            "g.cfg:2:24: epc_sections[0]: expected a size in MiB, or a number with a K, M, G or T suffix (decimal or \
             0x hex), found \"eight\"",
        ),
        (
            "name = 'a'\nepc_sections = [ 'size=8, base=0x100000800' ]\n",
            "g.cfg:2:32: epc_sections[0]: base 0x100000800 is not 4 KiB aligned (the next aligned address is \
             0x100001000)",
        ),
        (
            "name = 'a'\nepc_sections = [ 'node=1' ]\n",
            "g.cfg:2:18: epc_sections[0]: expected a `size=<MiB>` option, found \"node=1\"",
        ),
        (
            "name = 'a'\nepc_sections = [ 'size=8,colour=red' ]\n",
            "g.cfg:2:26: epc_sections[0]: expected an option named size, node, base, found `colour`",
        ),
        (
            "name = 'a'\nepc_sections = [ 'size=8,fast' ]\n",
            "g.cfg:2:26: epc_sections[0]: expected `name=value` options separated by ',' (names: size, node, base), \
             found `fast`",
        ),
        (
            "name = 'a'\nepc_sections = [ 'size=8,size=16' ]\n",
            "g.cfg:2:26: epc_sections[0]: `size` is given more than once",
        ),
        // Overlaps and the address width.
        (
            "name = 'a'\nmemory = 512\nepc_sections = [ 'size=8,base=0x1000000' ]\n",
            "g.cfg:3:31: epc_sections[0] [0x1000000, 0x1800000) overlaps RAM [0x0, 0x20000000)",
        ),
        (
            "name = 'a'\nepc_sections = [ 'size=8,base=0xfff00000' ]\n",
            "g.cfg:2:31: epc_sections[0] [0xfff00000, 0x100700000) overlaps the MMIO hole [0xf0000000, 0x100000000)",
        ),
        (
            "name = 'a'\nepc_sections = [\n  'size=8,base=0x200000000',\n  'size=8,base=0x200400000',\n]\n",
            "g.cfg:4:16: epc_sections[1] [0x200400000, 0x200c00000) overlaps epc_sections[0] [0x200000000, \
             0x200800000)",
        ),
        (
            "name = 'a'\nmemory = 8192\nepc_sections = [ 'size=8,base=0x200000000' ]\n",
            "g.cfg:3:31: epc_sections[0] [0x200000000, 0x200800000) overlaps RAM [0x100000000, 0x210000000)",
        ),
        (
            "name = 'a'\nepc_sections = [ 'size=8,base=0xffffffff00000' ]\n",
            "g.cfg:2:31: epc_sections[0] would end at 0x10000000700000, beyond the 52-bit guest physical address space",
        ),
        (
            "name = 'a'\nmemory = 1000000000\nepc = 1\n",
            "g.cfg:2:10: memory = 1000000000: must be from 1 to 1048574 MiB",
        ),
        // Launch control.
        (
            "name = 'a'\nsgx = 'epc=8,lehash=abcd'\n",
            "g.cfg:2:21: sgx lehash: expected 64 hex digits (the SHA-256 of the launch enclave signer's modulus), \
             found 4 hex digits",
        ),
        (
            "name = 'a'\nsgx = 'lehash=00112233445566778899aabbccddeeffg0112233445566778899aabbccddeeff'\n",
            "g.cfg:2:47: sgx lehash: expected 64 hex digits (the SHA-256 of the launch enclave signer's modulus), \
             found 'g', which is not a hex digit",
        ),
        ("name = 'a'\nsgx = 'epc=8,lewr=yes'\n", "g.cfg:2:19: sgx lewr: expected 0 or 1, found \"yes\""),
        ("name = 'a'\nsgx = 'epc=8,le=1'\n", "g.cfg:2:14: sgx: expected an option named epc, lehash, lewr, found `le`"),
        // More EPC than the host has (256 MiB on the embedded platform).
        (
            "name = 'a'\nepc = 512\n",
            "g.cfg:2:7: epc: the guest asks for 512 MiB of EPC, but this host has 256 MiB in total",
        ),
        (
            "name = 'a'\nsgx = \"epc=1G\"\n",
            "g.cfg:2:12: sgx epc: the guest asks for 1024 MiB of EPC, but this host has 256 MiB in total",
        ),
        (
            "name = 'a'\nepc_sections = [ 'size=128,node=0', 'size=129,node=1' ]\n",
            "g.cfg:2:16: epc_sections: the guest asks for 257 MiB of EPC, but this host has 256 MiB in total",
        ),
        (
            "name = 'a'\nepc = 0\n",
            "g.cfg:2:7: epc: expected a size of at least 1 MiB (leave `epc` out for no EPC), found `0`",
        ),
        // Conflicting sources of EPC: reported at the later one, naming the earlier.
        (
            "name = 'a'\nepc = 64\nsgx = 'epc=128'\n",
            "g.cfg:3:12: `sgx epc=` conflicts with `epc` at 2:7: they give different EPC sizes (128 MiB and 64 MiB); \
             keep one of them",
        ),
        (
            "name = 'a'\nepc_sections = [ 'size=8' ]\nepc = 8\n",
            "g.cfg:3:7: `epc` conflicts with `epc_sections` at 2:16: both say how much EPC the guest has; keep one \
             of them",
        ),
        (
            "name = 'a'\nsgx = 'epc=8'\nepc = 8\nepc_sections = [ 'size=8' ]\n",
            "g.cfg:4:16: `epc_sections` conflicts with `sgx epc=` at 2:12: both say how much EPC the guest has; \
             keep one of them",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(error(text), expected, "config: {text:?}");
    }
}

#[test]
fn too_many_sections() {
    let items: Vec<String> = (0..9).map(|_| "'size=1'".to_string()).collect();
    let text = format!("name = 'a'\nepc_sections = [ {} ]\n", items.join(", "));
    assert_eq!(error(&text), "g.cfg:2:98: 9 EPC sections: a guest may have at most 8 (Linux's limit)");
    let text = format!("name = 'a'\nepc_sections = [ {} ]\n", items[..8].join(", "));
    assert_eq!(guest(&text).layout.epc_sections.len(), 8);
}

#[test]
fn launch_control_needs_flexible_launch_control_on_the_host() {
    let mut platform = vsgx_hw::config::embedded_default();
    platform.features.flc = false;
    platform.features.lc_writable = false;
    let host = HostInfo::from_platform_config(&platform);
    let text = "name = 'a'\nsgx = 'epc=8,lehash=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff'\n";
    assert_eq!(
        GuestConfig::parse("g.cfg", text, &host).map(|_| ()).map_err(|e| e.to_string()),
        Err("g.cfg:2:21: sgx lehash: this host has no flexible launch control (CPUID.7.0:ECX[30]), so guests have \
             no launch-enclave hash MSRs"
            .to_string())
    );
    let text = "name = 'a'\nsgx = 'epc=8,lewr=1'\n";
    assert!(GuestConfig::parse("g.cfg", text, &host).is_err_and(|e| e.at == Location::new(2, 19)));
    // lewr=0 asks for nothing the host lacks.
    let p = GuestConfig::parse("g.cfg", "name = 'a'\nsgx = 'epc=8,lewr=0'\n", &host).unwrap_or_else(|e| panic!("{e}"));
    assert!(!p.layout.cpuid_policy.sgx_lc);
}

#[test]
fn errors_are_values_with_their_location() {
    let e: ConfigError = GuestConfig::parse("dir/web.cfg", "name = 'a'\n\nvcpus = 0\n", &host())
        .err()
        .unwrap_or_else(|| panic!("vcpus = 0 is refused"));
    assert_eq!((e.file.as_str(), e.at), ("dir/web.cfg", Location::new(3, 9)));
}

// ---- the typed config -------------------------------------------------------------------------

#[test]
fn defaults() {
    let p = guest("name = 'plain'\n");
    let c = &p.config;
    assert_eq!((c.memory_mib, c.maxmem_mib, c.vcpus, c.mmio_hole_mib), (128, 128, 1, 256));
    assert_eq!(c.guest_type, GuestType::Hvm);
    assert_eq!((c.on_poweroff, c.on_reboot, c.on_crash), (Action::Destroy, Action::Restart, Action::Destroy));
    assert_eq!(c.epc_policy, EpcPolicy::Static);
    assert!(c.epc.is_empty() && !c.provision && c.lehash.is_none() && c.lewr.is_none());
    assert!(c.uuid_derived);
    assert_eq!(c.uuid, Uuid::from_name("plain"), "the UUID is derived from the name");
    assert_eq!(c.launch_control(), vsgx_hv::policy::LaunchControl::default());
    assert!(p.warnings.is_empty());
    assert_eq!(p.layout.epc_sections, vec![]);
    assert_eq!(p.layout.check_agreement(), Ok(()));
}

#[test]
fn every_key() {
    let p = guest(
        "name = 'full'\nuuid = '3F9C2A1E-7B64-4D2E-9A51-0C8E6F4B2D17'\ntype = 'pvh'\nmemory = 1024\nmaxmem = 2048\n\
         vcpus = 4\nmmio_hole = 512\non_poweroff = 'preserve'\non_reboot = 'rename-restart'\n\
         on_crash = 'coredump-restart'\nsgx = 'epc=32M, lehash=00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff, lewr=0'\n\
         epc_policy = 'static'\nsgx_provision = 1\n",
    );
    let c = &p.config;
    assert_eq!(c.uuid.to_string(), "3f9c2a1e-7b64-4d2e-9a51-0c8e6f4b2d17");
    assert!(!c.uuid_derived);
    assert_eq!(
        (c.guest_type, c.memory_mib, c.maxmem_mib, c.vcpus, c.mmio_hole_mib),
        (GuestType::Pvh, 1024, 2048, 4, 512)
    );
    assert_eq!(
        (c.on_poweroff, c.on_reboot, c.on_crash),
        (Action::Preserve, Action::RenameRestart, Action::CoredumpRestart)
    );
    assert_eq!(c.epc_bytes(), 32 * MIB);
    let hash: Vec<u8> = (0..32u8).map(|i| (i % 16) * 0x11).collect();
    assert_eq!(c.lehash.map(|h| h.to_vec()), Some(hash.clone()));
    assert_eq!(c.lewr, Some(false));
    assert!(c.provision);
    let d = &p.layout.domain;
    assert_eq!((d.name.as_str(), d.uuid, d.vcpus, d.provision), ("full", c.uuid.0, 4, true));
    assert_eq!((d.launch.lehash.to_vec(), d.launch.writable), (hash, false));
    assert!(p.warnings.is_empty());
}

#[test]
fn epc_and_sgx_epc_may_agree() {
    let p = guest("name = 'a'\nepc = 64\nsgx = 'epc=64,lewr=1'\n");
    assert_eq!(p.config.epc_bytes(), 64 * MIB);
    assert_eq!(p.config.epc.len(), 1);
}

// ---- warnings ---------------------------------------------------------------------------------

#[test]
fn each_unused_key_gives_exactly_one_warning() {
    let p = guest(
        "name = 'a'\nkernel = '/boot/vmlinuz'\ndisk = ['x']\ndisk += ['y']\nvif = []\nvnc = 1\nvnc = 0\n\
         epc_section = ['size=8']\nmemroy = 512\ncpus = '0-3'\n",
    );
    let text: Vec<String> = p.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "g.cfg:2:1: warning: `kernel` is not used by vsgx; ignored",
            "g.cfg:4:1: warning: `disk` is not used by vsgx; ignored",
            "g.cfg:5:1: warning: `vif` is not used by vsgx; ignored",
            "g.cfg:7:1: warning: `vnc` is not used by vsgx; ignored",
            "g.cfg:8:1: warning: `epc_section` is not used by vsgx; ignored (did you mean `epc_sections`?)",
            "g.cfg:9:1: warning: `memroy` is not used by vsgx; ignored (did you mean `memory`?)",
            "g.cfg:10:1: warning: `cpus` is not used by vsgx; ignored",
        ]
    );
    assert_eq!(p.warnings[1].key, "disk");
    assert!(p.config.epc.is_empty(), "a misspelt key is not read");
}

#[test]
fn a_minimal_xl_style_file_with_commented_out_keys_loads() {
    let text = "# =========================\n# Example guest\n# =========================\n\nname = \"example.pvlinux\"\n\
                #uuid = \"XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX\"\nkernel = \"/boot/vmlinuz\"\n#ramdisk = \"/boot/initrd.gz\"\n\
                extra = \"root=/dev/xvda1\"\nmemory = 128\n#maxmem = 512\nvcpus = 2\nvif = [ '' ]\n\
                disk = [ '/dev/vg/guest-volume,raw,xvda,rw' ]\n";
    let p = guest(text);
    let keys: Vec<&str> = p.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(keys, ["kernel", "extra", "vif", "disk"]);
    assert_eq!((p.config.name.as_str(), p.config.memory_mib, p.config.vcpus), ("example.pvlinux", 128, 2));
    assert_eq!(p.config.uuid, Uuid::from_name("example.pvlinux"));
    assert!(p.config.epc.is_empty(), "a guest without EPC is a plain guest");
}

// ---- the example configs ----------------------------------------------------------------------

fn load(name: &str) -> Parsed {
    GuestConfig::load(&examples().join(name), &host()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_xen_style_example_loads_with_one_warning_per_xen_only_key() {
    let p = load("xen-hvm.cfg");
    let keys: Vec<&str> = p.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(keys, ["builder", "disk", "vif", "boot", "vnc", "vnclisten", "sdl", "serial", "usb", "usbdevice"]);
    assert!(p.warnings.iter().all(|w| w.file.ends_with("xen-hvm.cfg") && w.message.ends_with("ignored")));
    let c = &p.config;
    assert_eq!((c.name.as_str(), c.memory_mib, c.vcpus), ("legacy-hvm", 2048, 2));
    assert_eq!(c.uuid.to_string(), "3f9c2a1e-7b64-4d2e-9a51-0c8e6f4b2d17");
    assert_eq!((c.epc_bytes(), c.lewr), (64 * MIB, Some(true)));
    assert_eq!(c.on_crash, Action::Restart);
    assert_eq!(p.layout.epc_sections[0].gpa, 0x1_0000_0000);
}

#[test]
fn the_single_section_example() {
    let p = load("web.cfg");
    assert!(p.warnings.is_empty());
    assert_eq!((p.config.name.as_str(), p.config.guest_type, p.config.memory_mib), ("web", GuestType::Pvh, 512));
    assert_eq!(
        p.layout.epc_sections,
        vec![vsgx_hv::policy::VepcSection { gpa: 0x1_0000_0000, size: 64 * MIB, node: 0 }]
    );
}

#[test]
fn the_two_node_example() {
    let p = load("numa.cfg");
    assert!(p.warnings.is_empty());
    let sections: Vec<(u64, u64, u32)> = p.layout.epc_sections.iter().map(|s| (s.gpa, s.size, s.node)).collect();
    assert_eq!(sections, [(0x1_2000_0000, 96 * MIB, 0), (0x1_2600_0000, 96 * MIB, 1)]);
    let kinds: Vec<(u64, MemoryType)> = p.layout.memory_map.iter().map(|r| (r.base, r.kind)).collect();
    assert_eq!(
        kinds,
        [
            (0, MemoryType::Ram),
            (0xF000_0000, MemoryType::Mmio),
            (0x1_0000_0000, MemoryType::Ram),
            (0x1_2000_0000, MemoryType::Reserved),
            (0x1_2600_0000, MemoryType::Reserved),
        ]
    );
    assert_eq!(p.layout.check_agreement(), Ok(()));
}

#[test]
fn every_example_loads_and_its_descriptions_agree() {
    let mut names: Vec<PathBuf> = std::fs::read_dir(examples())
        .map(|d| {
            d.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "cfg")).collect()
        })
        .unwrap_or_default();
    names.sort();
    assert!(names.len() >= 3, "{names:?}");
    for path in names {
        let p = GuestConfig::load(&path, &host()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.layout.check_agreement(), Ok(()), "{}", path.display());
    }
    let missing = GuestConfig::load(Path::new("/nonexistent/x.cfg"), &host()).err().map(|e| e.to_string());
    assert!(missing.is_some_and(|m| m.starts_with("/nonexistent/x.cfg: cannot read the config file: ")));
}

#[test]
fn memory_map_cpuid_and_acpi_describe_the_same_vepc() {
    for name in ["xen-hvm.cfg", "web.cfg", "numa.cfg"] {
        let layout = load(name).layout;
        let reserved: Vec<(u64, u64)> =
            layout.memory_map.iter().filter(|r| r.kind == MemoryType::Reserved).map(|r| (r.base, r.size)).collect();
        let mut from_cpuid = Vec::new();
        for subleaf in 2u32.. {
            let regs = layout.cpuid.iter().find(|e| e.leaf == 0x12 && e.subleaf == subleaf).map(|e| e.regs);
            let regs = regs.unwrap_or_else(|| panic!("{name}: no sub-leaf {subleaf} (and no terminator before it)"));
            match EpcSectionLeaf::decode(subleaf, regs) {
                Ok(Some(s)) => from_cpuid.push((s.base, s.size)),
                Ok(None) => break,
                Err(e) => panic!("{name}: {e}"),
            }
        }
        let from_acpi: Vec<(u64, u64)> = layout.acpi_epc.resources.iter().map(|r| (r.base, r.length)).collect();
        assert_eq!(layout.acpi_epc.hid, "INT0E0C");
        assert_eq!(from_cpuid, from_acpi, "{name}: CPUID and ACPI, both in section order");
        let mut sorted = from_cpuid.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, reserved, "{name}: the memory map's reserved entries, by address");
        let spec: Vec<(u64, u64)> = layout.domain.epc.iter().map(|s| (s.gpa, s.size)).collect();
        assert_eq!(spec, from_cpuid, "{name}: the hypervisor's domain spec");
        assert!(!from_cpuid.is_empty());
    }
}

// ---- robustness -------------------------------------------------------------------------------

/// Text built from the grammar's own pieces, so random cases reach deep into the parser.
fn grammar_soup() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("name"),
        Just("epc"),
        Just("epc_sections"),
        Just("sgx"),
        Just("memory"),
        Just("mmio_hole"),
        Just("vif"),
        Just(" = "),
        Just("+="),
        Just("="),
        Just("["),
        Just("]"),
        Just(","),
        Just(";"),
        Just("\n"),
        Just("# c"),
        Just("\""),
        Just("'"),
        Just("\\"),
        Just("\\x4"),
        Just("0x"),
        Just("12"),
        Just("0"),
        Just("'size=8,node=1'"),
        Just("\"epc=64,lehash=00,lewr=1\""),
        Just("'size=1,base=0x100000000'"),
        Just("'g'"),
        Just(" "),
        Just("\t"),
        Just("é"),
        Just("\r"),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

/// Random settings, for the round trip.
fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![any::<u64>().prop_map(n), any::<String>().prop_map(|t| s(&t)),];
    leaf.prop_recursive(4, 24, 5, |inner| prop::collection::vec(inner, 0..5).prop_map(l))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = XlConfig::parse("p.cfg", &text);
        let _ = GuestConfig::parse("p.cfg", &text, &host());
    }

    #[test]
    fn grammar_soup_never_panics(text in grammar_soup()) {
        match XlConfig::parse("p.cfg", &text) {
            Ok(c) => {
                let _ = GuestConfig::from_xl(&c, &host());
            }
            Err(e) => {
                let lines = text.split('\n').count() as u32;
                prop_assert!(e.at.line >= 1 && e.at.line <= lines && e.at.column >= 1, "{e} in {text:?}");
            }
        }
    }

    #[test]
    fn valid_looking_configs_never_panic(
        memory in 0u64..20000, hole in 0u64..5000, sizes in prop::collection::vec((0u64..300, 0u32..3, prop::option::of(0u64..(1 << 40))), 0..10),
    ) {
        let items: Vec<String> = sizes
            .iter()
            .map(|(size, node, base)| match base {
                Some(b) => format!("'size={size},node={node},base={:#x}'", b * 4096),
                None => format!("'size={size},node={node}'"),
            })
            .collect();
        let text = format!("name = 'p'\nmemory = {memory}\nmmio_hole = {hole}\nepc_sections = [ {} ]\n", items.join(", "));
        if let Ok(p) = GuestConfig::parse("p.cfg", &text, &host()) {
            prop_assert_eq!(p.layout.check_agreement(), Ok(()));
        }
    }

    #[test]
    fn display_parses_back_to_the_same_settings(
        entries in prop::collection::vec(("[a-z][._0-9a-z]{0,8}", arb_value()), 0..8),
    ) {
        let mut text = String::new();
        for (key, value) in &entries {
            text.push_str(&format!("{key} = {value}\n"));
        }
        let parsed = XlConfig::parse("p.cfg", &text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // The last assignment of each key wins.
        for (key, _) in &entries {
            let last = entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v);
            prop_assert_eq!(parsed.get(key).map(|s| &s.value), last);
        }
        let again = XlConfig::parse("p.cfg", &parsed.to_string()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(again.to_string(), parsed.to_string());
    }
}
