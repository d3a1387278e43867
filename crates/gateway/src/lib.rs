//! vmcp-gateway: many backend MCP servers behind one Streamable HTTP endpoint.
