//! A client's POST body: JSON, then one JSON-RPC message or a batch of them (the path of
//! `http::mcp::post`), and the method's metric label and log form (H1).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vmcp_gateway::jsonrpc::{self, Message};
use vmcp_gateway::metrics::{MAX_LOGGED_LEN, OTHER_METHOD, for_log, method_label};
use vmcp_gateway::protocol::Method;

fn check_method(method: &str) {
    let label = method_label(method);
    assert!(label == OTHER_METHOD || Method::parse(label).is_some());
    assert!(label == OTHER_METHOD || label == method);
    let logged = for_log(method);
    assert!(logged.len() <= MAX_LOGGED_LEN + '…'.len_utf8());
    assert!(!logged.chars().any(char::is_control));
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    let items = match value {
        Value::Array(items) => items,
        single => vec![single],
    };
    for item in items {
        match jsonrpc::classify(item) {
            Ok(Message::Request { id, method, params }) => {
                check_method(&method);
                let rebuilt = jsonrpc::request(&id, &method, params.clone());
                let again = jsonrpc::classify(rebuilt).map_err(|e| e.message);
                assert_eq!(again, Ok(Message::Request { id: id.clone(), method, params }));
                assert_eq!(jsonrpc::result(&id, Value::Null)["id"], id);
            }
            Ok(Message::Notification { method, params }) => {
                check_method(&method);
                let rebuilt = jsonrpc::notification(&method, params.clone());
                let again = jsonrpc::classify(rebuilt).map_err(|e| e.message);
                assert_eq!(again, Ok(Message::Notification { method, params }));
            }
            Ok(Message::Response { id, body }) => {
                assert!(body.get("result").is_some() || body.get("error").is_some());
                assert!(id.is_string() || id.is_number());
            }
            Err(e) => {
                let v = jsonrpc::error(None, &e);
                assert!(v["error"]["code"].is_i64());
                assert_eq!(jsonrpc::RpcError::from_value(&v["error"]), e);
            }
        }
    }
});
