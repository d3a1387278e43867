//! JSON-RPC 2.0 messages as MCP uses them. Payloads stay `serde_json::Value` so that fields the
//! gateway does not interpret pass through unchanged.

use serde_json::{Map, Value, json};

/// Invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// Not a valid JSON-RPC message.
pub const INVALID_REQUEST: i64 = -32600;
/// Unknown method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Invalid parameters (also unknown tool / prompt / resource).
pub const INVALID_PARAMS: i64 = -32602;
/// Internal error (also: a backend failed).
pub const INTERNAL_ERROR: i64 = -32603;
/// MCP: the requested resource does not exist (`resources/read` of an unknown URI).
pub const RESOURCE_NOT_FOUND: i64 = -32002;

/// One incoming JSON-RPC message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A request (has `id` and `method`).
    Request {
        /// The id, preserved exactly (number or string).
        id: Value,
        /// The method.
        method: String,
        /// The params, if any.
        params: Option<Value>,
    },
    /// A notification (has `method`, no `id`).
    Notification {
        /// The method.
        method: String,
        /// The params, if any.
        params: Option<Value>,
    },
    /// A response to a request the other side received (has `id` and `result` or `error`).
    Response {
        /// The id.
        id: Value,
        /// The whole message.
        body: Value,
    },
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// Error code.
    pub code: i64,
    /// Message.
    pub message: String,
    /// Optional data.
    pub data: Option<Value>,
}

impl RpcError {
    /// An error with code and message.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), data: None }
    }

    /// Adds `data`.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// The error as a JSON-RPC error object.
    pub fn to_value(&self) -> Value {
        let mut o = Map::new();
        o.insert("code".into(), self.code.into());
        o.insert("message".into(), self.message.clone().into());
        if let Some(d) = &self.data {
            o.insert("data".into(), d.clone());
        }
        Value::Object(o)
    }

    /// Parses an error object received from a peer.
    pub fn from_value(v: &Value) -> Self {
        Self {
            code: v.get("code").and_then(Value::as_i64).unwrap_or(INTERNAL_ERROR),
            message: v.get("message").and_then(Value::as_str).unwrap_or("error").to_owned(),
            data: v.get("data").cloned(),
        }
    }
}

/// Classifies one JSON value as a JSON-RPC message.
pub fn classify(v: Value) -> Result<Message, RpcError> {
    let Value::Object(mut o) = v else {
        return Err(RpcError::new(INVALID_REQUEST, "a JSON-RPC message must be an object"));
    };
    if o.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(RpcError::new(INVALID_REQUEST, "\"jsonrpc\" must be \"2.0\""));
    }
    let id = o.get("id").cloned();
    if let Some(id) = &id
        && !(id.is_string() || id.is_i64() || id.is_u64())
    {
        return Err(RpcError::new(INVALID_REQUEST, "\"id\" must be a string or an integer"));
    }
    match (o.remove("method"), id) {
        (Some(Value::String(method)), Some(id)) => {
            let params = o.remove("params");
            check_params(&params)?;
            Ok(Message::Request { id, method, params })
        }
        (Some(Value::String(method)), None) => {
            let params = o.remove("params");
            check_params(&params)?;
            Ok(Message::Notification { method, params })
        }
        (Some(_), _) => Err(RpcError::new(INVALID_REQUEST, "\"method\" must be a string")),
        (None, Some(id)) if o.contains_key("result") || o.contains_key("error") => {
            Ok(Message::Response { id, body: Value::Object(o) })
        }
        (None, _) => Err(RpcError::new(INVALID_REQUEST, "not a request, notification or response")),
    }
}

fn check_params(p: &Option<Value>) -> Result<(), RpcError> {
    match p {
        None | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(RpcError::new(INVALID_REQUEST, "\"params\" must be an object")),
    }
}

/// A success response.
pub fn result(id: &Value, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

/// An error response (`id` is `null` when the request id is unknown).
pub fn error(id: Option<&Value>, err: &RpcError) -> Value {
    json!({ "jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "error": err.to_value() })
}

/// A request.
pub fn request(id: &Value, method: &str, params: Option<Value>) -> Value {
    let mut v = json!({ "jsonrpc": "2.0", "id": id, "method": method });
    if let (Some(p), Some(o)) = (params, v.as_object_mut()) {
        o.insert("params".into(), p);
    }
    v
}

/// A notification.
pub fn notification(method: &str, params: Option<Value>) -> Value {
    let mut v = json!({ "jsonrpc": "2.0", "method": method });
    if let (Some(p), Some(o)) = (params, v.as_object_mut()) {
        o.insert("params".into(), p);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_messages() {
        let r = classify(json!({"jsonrpc":"2.0","id":7,"method":"ping"})).unwrap();
        assert_eq!(r, Message::Request { id: json!(7), method: "ping".into(), params: None });
        let n = classify(json!({"jsonrpc":"2.0","method":"notifications/initialized"})).unwrap();
        assert!(matches!(n, Message::Notification { .. }));
        let resp = classify(json!({"jsonrpc":"2.0","id":"a","result":{}})).unwrap();
        assert!(matches!(resp, Message::Response { .. }));
    }

    #[test]
    fn rejects_invalid_requests() {
        for bad in [
            json!([]),
            json!({"id":1,"method":"x"}),
            json!({"jsonrpc":"1.0","id":1,"method":"x"}),
            json!({"jsonrpc":"2.0","id":1.5,"method":"x"}),
            json!({"jsonrpc":"2.0","id":1,"method":3}),
            json!({"jsonrpc":"2.0","id":1,"method":"x","params":[1]}),
            json!({"jsonrpc":"2.0","id":1}),
        ] {
            assert_eq!(classify(bad.clone()).unwrap_err().code, INVALID_REQUEST, "{bad}");
        }
    }

    #[test]
    fn string_ids_are_preserved() {
        let Message::Request { id, .. } =
            classify(json!({"jsonrpc":"2.0","id":"abc-1","method":"x"})).unwrap()
        else {
            panic!()
        };
        assert_eq!(result(&id, json!({}))["id"], json!("abc-1"));
    }
}
