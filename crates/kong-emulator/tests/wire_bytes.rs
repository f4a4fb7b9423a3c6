//! The encoder against the byte-level examples of docs/protocol.md#byte-level-example and the
//! lua-MessagePack rules of docs/protocol.md#encoding.

use kong_emulator::wire::{self, StepData};
use kong_emulator::Value;

fn unhex(s: &str) -> Vec<u8> {
    s.split_whitespace().map(|b| u8::from_str_radix(b, 16).expect("hex byte")).collect()
}

fn enc(v: &Value) -> String {
    let mut out = Vec::new();
    wire::encode(v, &mut out);
    wire::hex(&out)
}

fn map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(pairs.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
}

#[test]
fn start_instance_request_matches_example_1() {
    let param = map(vec![("Name", "rust-demo".into()), ("Config", r#"{"message":"hi","__seq__":7}"#.into())]);
    let expected = unhex(
        "94 00 01 B4 70 6C 75 67 69 6E 2E 53 74 61 72 74 49 6E 73 74 61 6E 63 65 91 82
         A4 4E 61 6D 65 A9 72 75 73 74 2D 64 65 6D 6F A6 43 6F 6E 66 69 67 BC 7B 22 6D
         65 73 73 61 67 65 22 3A 22 68 69 22 2C 22 5F 5F 73 65 71 5F 5F 22 3A 37 7D",
    );
    assert_eq!(wire::hex(&wire::encode_request(1, "plugin.StartInstance", &param)), wire::hex(&expected));
}

#[test]
fn handle_event_request_matches_example_3() {
    let param = map(vec![("InstanceId", 42.into()), ("EventName", "access".into())]);
    let expected = unhex(
        "94 00 02 B2 70 6C 75 67 69 6E 2E 48 61 6E 64 6C 65 45 76 65 6E 74 91 82 AA 49
         6E 73 74 61 6E 63 65 49 64 2A A9 45 76 65 6E 74 4E 61 6D 65 A6 61 63 63 65 73 73",
    );
    assert_eq!(wire::hex(&wire::encode_request(2, "plugin.HandleEvent", &param)), wire::hex(&expected));
}

#[test]
fn step_with_string_matches_example_5() {
    let bytes = wire::encode_step(3, "plugin.Step", &5.into(), &StepData::Value("example.com".into()));
    let expected = unhex(
        "94 00 03 AB 70 6C 75 67 69 6E 2E 53 74 65 70 91 82 A7 45 76 65 6E 74 49 64 05
         A4 44 61 74 61 AB 65 78 61 6D 70 6C 65 2E 63 6F 6D",
    );
    assert_eq!(wire::hex(&bytes), wire::hex(&expected));
}

#[test]
fn nil_result_omits_data_key_example_7() {
    let bytes = wire::encode_step(4, "plugin.Step", &5.into(), &StepData::Absent);
    let expected = unhex("94 00 04 AB 70 6C 75 67 69 6E 2E 53 74 65 70 91 81 A7 45 76 65 6E 74 49 64 05");
    assert_eq!(wire::hex(&bytes), wire::hex(&expected));
    // A Lua nil coming through From<Value> is also "absent".
    assert_eq!(StepData::from(Value::Nil), StepData::Absent);
}

#[test]
fn multimap_step_and_empty_multimap() {
    let data =
        map(vec![("accept", Value::Array(vec!["*/*".into()])), ("x-a", Value::Array(vec!["1".into(), "2".into()]))]);
    let bytes = wire::encode_step(5, "plugin.StepMultiMap", &6.into(), &StepData::Value(data));
    let mut expected = unhex("94 00 05 B3");
    expected.extend_from_slice(b"plugin.StepMultiMap");
    expected.extend(unhex(
        "91 82 A7 45 76 65 6E 74 49 64 06 A4 44 61 74 61 82 A6 61 63 63 65 70 74 91 A3 2A 2F 2A A3 78 2D 61 92 A1 31 A1 32",
    ));
    assert_eq!(wire::hex(&bytes), wire::hex(&expected));

    let empty = wire::encode_step(5, "plugin.StepMultiMap", &6.into(), &StepData::EmptyMap);
    assert!(wire::hex(&empty).ends_with("A4 44 61 74 61 80"), "{}", wire::hex(&empty));
}

#[test]
fn empty_table_is_an_empty_array() {
    assert_eq!(enc(&Value::Map(vec![])), "90");
    assert_eq!(enc(&Value::Array(vec![])), "90");
}

#[test]
fn raw_body_is_bin_and_other_bytes_are_str() {
    let bytes = wire::encode_step(1, "plugin.Step", &1.into(), &StepData::Raw(vec![0xFF, 0x00, 0xCF]));
    assert!(wire::hex(&bytes).ends_with("A4 44 61 74 61 C4 03 FF 00 CF"), "{}", wire::hex(&bytes));
    // A bin received from the server is a Lua string: it goes back as str.
    assert_eq!(enc(&Value::Binary(vec![0x61])), "A1 61");
}

#[test]
fn numbers_follow_lua_double_rules() {
    assert_eq!(enc(&Value::F64(1_700_000_000.25)), "CB 41 D9 54 FC 40 10 00 00");
    assert_eq!(enc(&Value::F64(3.0)), "03");
    assert_eq!(enc(&Value::F64(-0.0)), "00");
    assert_eq!(enc(&Value::F64(1_700_000_000.0)), "CE 65 53 F1 00");
    assert_eq!(enc(&Value::from(200)), "CC C8");
    assert_eq!(enc(&Value::from(65_535)), "CD FF FF");
    assert_eq!(enc(&Value::from(1u64 << 32)), "CF 00 00 00 01 00 00 00 00");
    assert_eq!(enc(&Value::from(-1)), "FF");
    assert_eq!(enc(&Value::from(-32)), "E0");
    assert_eq!(enc(&Value::from(-33)), "D0 DF");
    assert_eq!(enc(&Value::from(-200)), "D1 FF 38");
    assert_eq!(enc(&Value::from(-40_000)), "D2 FF FF 63 C0");
    assert_eq!(enc(&Value::F64(f64::NAN)), "CB FF F8 00 00 00 00 00 00");
    assert_eq!(enc(&Value::F64(f64::INFINITY)), "CB 7F F0 00 00 00 00 00 00");
    assert_eq!(enc(&Value::F32(0.5)), "CB 3F E0 00 00 00 00 00 00");
}

#[test]
fn strings_never_use_str8() {
    let s31 = "a".repeat(31);
    let s32 = "a".repeat(32);
    let s255 = "a".repeat(255);
    let s70k = "a".repeat(70_000);
    assert!(enc(&Value::from(s31.as_str())).starts_with("BF 61"));
    assert!(enc(&Value::from(s32.as_str())).starts_with("DA 00 20 61"));
    assert!(enc(&Value::from(s255.as_str())).starts_with("DA 00 FF 61"));
    assert!(enc(&Value::from(s70k.as_str())).starts_with("DB 00 01 11 70 61"));
}

#[test]
fn invalid_utf8_strings_keep_their_bytes() {
    let v = wire::lua_string(&[0x66, 0xFF, 0x6F]);
    assert_eq!(enc(&v), "A3 66 FF 6F");
}

#[test]
fn close_instance_and_notification_shapes() {
    let mut expected = unhex("94 00 06 B4");
    expected.extend_from_slice(b"plugin.CloseInstance");
    expected.extend(unhex("91 2A"));
    assert_eq!(wire::hex(&wire::encode_request(6, "plugin.CloseInstance", &42.into())), wire::hex(&expected));

    let notification = unhex("93 02 A9 73 65 72 76 65 72 50 69 64 CD 30 39");
    let wire::Decoded::Complete(v, used) = wire::decode_prefix(&notification) else {
        panic!("notification did not decode");
    };
    assert_eq!(used, notification.len());
    assert_eq!(wire::classify(v), Ok(wire::Incoming::Notification { label: "serverPid".into(), args: 12345.into() }));
}

#[test]
fn server_responses_decode_and_classify() {
    // Example 8 (terminal call) and the error example.
    let exit = unhex(
        "94 01 04 C0 82 A7 45 76 65 6E 74 49 64 05 A4 44 61 74 61 82 A6 4D 65 74 68 6F
         64 B2 6B 6F 6E 67 2E 72 65 73 70 6F 6E 73 65 2E 65 78 69 74 A4 41 72 67 73 93
         CD 01 93 A9 66 6F 72 62 69 64 64 65 6E 81 A6 78 2D 64 65 6D 6F A1 31",
    );
    let wire::Decoded::Complete(v, _) = wire::decode_prefix(&exit) else { panic!("exit example") };
    let wire::Incoming::Response { msgid, error, result } = wire::classify(v).expect("response") else {
        panic!("not a response")
    };
    assert_eq!((msgid, error), (Value::from(4), Value::Nil));
    let data = wire::map_get(&result, "Data").expect("Data");
    assert_eq!(wire::map_get(data, "Method"), Some(&Value::from("kong.response.exit")));

    let err = unhex("94 01 02 B5 6E 6F 20 70 6C 75 67 69 6E 20 69 6E 73 74 61 6E 63 65 20 34 32 C0");
    let wire::Decoded::Complete(v, _) = wire::decode_prefix(&err) else { panic!("error example") };
    assert!(matches!(wire::classify(v), Ok(wire::Incoming::Response { error: Value::String(_), .. })));

    // Half a message is "incomplete", garbage is "invalid", a request type is rejected.
    assert!(matches!(wire::decode_prefix(&err[..10]), wire::Decoded::Incomplete));
    assert!(matches!(wire::decode_prefix(&[0xC1]), wire::Decoded::Invalid(_)));
    assert!(wire::classify(Value::Array(vec![0.into(), 1.into(), "x".into(), Value::Array(vec![])])).is_err());
}

#[test]
fn values_from_the_server_become_lua_values() {
    // nil map entries vanish, holes make maps, 1..n maps become arrays, bin becomes str.
    let v = wire::to_lua(Value::Map(vec![("a".into(), Value::Nil), ("b".into(), Value::Binary(b"x".to_vec()))]));
    assert_eq!(v, Value::Map(vec![("b".into(), "x".into())]));
    let holes = wire::to_lua(Value::Array(vec![1.into(), Value::Nil, 3.into()]));
    assert_eq!(holes, Value::Map(vec![(1.into(), 1.into()), (3.into(), 3.into())]));
    let trailing = wire::to_lua(Value::Array(vec![1.into(), Value::Nil]));
    assert_eq!(trailing, Value::Array(vec![1.into()]));
    let seq = wire::to_lua(Value::Map(vec![(2.into(), "b".into()), (1.into(), "a".into())]));
    assert_eq!(seq, Value::Array(vec!["a".into(), "b".into()]));
    assert_eq!(wire::to_lua(Value::from(u64::MAX)), Value::F64(u64::MAX as f64));
}
