//! The manifests the tests apply: Redis as a pod, and the group of MCP servers behind a
//! two-replica gateway.

/// Redis as a Deployment and Service named `redis`, from the local `image`.
pub(crate) fn redis_manifest(image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: redis}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: redis}}}}
  template:
    metadata: {{labels: {{app: redis}}}}
    spec:
      automountServiceAccountToken: false
      securityContext: {{runAsNonRoot: true, runAsUser: 999, seccompProfile: {{type: RuntimeDefault}}}}
      containers:
        - name: redis
          image: {image}
          imagePullPolicy: Never
          ports: [{{name: redis, containerPort: 6379}}]
          readinessProbe: {{tcpSocket: {{port: redis}}, periodSeconds: 2}}
          securityContext: {{allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: redis}}
spec:
  selector: {{app: redis}}
  ports: [{{name: redis, port: 6379, targetPort: redis}}]
"#
    )
}

/// The group: `weather` (Streamable HTTP) behind token exchange and `notes` (stdio, through the
/// bridge).
pub(crate) fn backends(token_url: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: gateway-client}}
stringData: {{secret: gateway-secret}}
---
apiVersion: vmcp.dev/v1alpha1
kind: MCPExternalAuthConfig
metadata: {{name: exchange-a}}
spec:
  type: tokenExchange
  tokenExchange:
    tokenUrl: {token_url}
    clientId: vmcp-gateway
    clientSecretRef: {{name: gateway-client, key: secret}}
    audience: backend-a
---
apiVersion: vmcp.dev/v1alpha1
kind: MCPGroup
metadata: {{name: team}}
spec: {{}}
---
apiVersion: vmcp.dev/v1alpha1
kind: MCPServer
metadata: {{name: weather}}
spec:
  image: ghcr.io/vmcp-dev/vmcp-example-backend:0.1.0
  transport: streamable-http
  args: ["--kind", "weather", "--host", "0.0.0.0", "--port", "8080", "--allowed-host", "*"]
  port: 8080
  groupRef: {{name: team}}
  externalAuthConfigRef: {{name: exchange-a}}
---
apiVersion: vmcp.dev/v1alpha1
kind: MCPServer
metadata: {{name: notes}}
spec:
  image: ghcr.io/vmcp-dev/vmcp-example-backend:0.1.0
  transport: stdio
  command: ["/usr/local/bin/vmcp-example-backend"]
  args: ["--kind", "notes", "--stdio"]
  port: 8080
  groupRef: {{name: team}}
"#
    )
}

/// The two-replica gateway of the group, with OIDC and Redis sessions.
pub(crate) fn gateway(issuer: &str) -> String {
    format!(
        r#"apiVersion: vmcp.dev/v1alpha1
kind: VirtualMCPServer
metadata: {{name: gw}}
spec:
  groupRef: {{name: team}}
  incomingAuth:
    type: oidc
    oidc: {{issuer: "{issuer}", audience: vmcp-gateway}}
  outgoingAuth: {{source: discovered}}
  sessionStorage: {{provider: redis, address: "redis:6379", keyPrefix: "e2e:"}}
  replicas: 2
"#
    )
}

/// A third member of the group, added and removed while the gateway pods run: the notes
/// server over Streamable HTTP, without auth.
pub(crate) const ALMANAC: &str = r#"apiVersion: vmcp.dev/v1alpha1
kind: MCPServer
metadata: {name: almanac}
spec:
  image: ghcr.io/vmcp-dev/vmcp-example-backend:0.1.0
  transport: streamable-http
  args: ["--kind", "notes", "--host", "0.0.0.0", "--port", "8080", "--allowed-host", "*"]
  port: 8080
  groupRef: {name: team}
"#;
