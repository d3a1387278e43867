//! The `notes` example backend: an in-memory note store shared by every MCP session.

use std::sync::Arc;

use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    handler::server::{
        router::{prompt::PromptRouter, tool::ToolRouter},
        wrapper::Parameters,
    },
    model::{
        CallToolResult, ContentBlock, GetPromptResult, Implementation, ListResourcesResult,
        PaginatedRequestParams, PromptMessage, ReadResourceRequestParams, ReadResourceResponse,
        ReadResourceResult, Resource, ResourceContents, Role, ServerCapabilities, ServerConfig,
    },
    prompt, prompt_handler, prompt_router,
    service::RequestContext,
    tool, tool_handler, tool_router,
};
use schemars::JsonSchema;
use serde::Deserialize;
use tokio::sync::RwLock;

const ALL_NOTES_URI: &str = "notes://all";
const MAX_NOTE_CHARS: usize = 4096;

#[derive(Debug, Clone)]
struct Note {
    id: u64,
    text: String,
}

#[derive(Debug, Default)]
struct Notes {
    next_id: u64,
    notes: Vec<Note>,
}

/// The notes every session sees; cloning shares the same store.
#[derive(Debug, Clone, Default)]
pub struct NoteStore(Arc<RwLock<Notes>>);

impl NoteStore {
    async fn add(&self, text: String) -> Note {
        let mut notes = self.0.write().await;
        notes.next_id += 1;
        let note = Note { id: notes.next_id, text };
        notes.notes.push(note.clone());
        note
    }

    async fn all(&self) -> Vec<Note> {
        self.0.read().await.notes.clone()
    }

    async fn search(&self, query: &str) -> Vec<Note> {
        let query = query.to_lowercase();
        self.0
            .read()
            .await
            .notes
            .iter()
            .filter(|note| note.text.to_lowercase().contains(&query))
            .cloned()
            .collect()
    }

    async fn clear(&self) -> usize {
        let mut notes = self.0.write().await;
        let count = notes.notes.len();
        notes.notes.clear();
        count
    }
}

/// Arguments of the `add_note` tool.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct AddNoteParams {
    /// The note's text (1 to 4096 characters).
    pub text: String,
}

/// Arguments of the `search` tool.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SearchParams {
    /// Text to look for in the notes (case-insensitive substring match).
    pub query: String,
}

/// One notes session; every session shares the same [`NoteStore`].
#[derive(Debug, Clone)]
pub struct NotesServer {
    store: NoteStore,
    tool_router: ToolRouter<Self>,
    prompt_router: PromptRouter<Self>,
}

impl NotesServer {
    pub fn new(store: NoteStore) -> Self {
        Self { store, tool_router: Self::tool_router(), prompt_router: Self::prompt_router() }
    }
}

#[tool_router]
impl NotesServer {
    #[tool(
        description = "Add a note to the shared in-memory notebook. Returns the new note's id.",
        annotations(read_only_hint = false, destructive_hint = false, open_world_hint = false)
    )]
    async fn add_note(
        &self,
        Parameters(AddNoteParams { text }): Parameters<AddNoteParams>,
    ) -> CallToolResult {
        let text = text.trim();
        if text.is_empty() {
            return tool_error("`text` must not be empty");
        }
        if text.chars().count() > MAX_NOTE_CHARS {
            return tool_error(format!("`text` is longer than {MAX_NOTE_CHARS} characters"));
        }
        let note = self.store.add(text.to_string()).await;
        tracing::info!(id = note.id, "note added");
        CallToolResult::success(vec![ContentBlock::text(format!("added note #{}", note.id))])
    }

    #[tool(
        description = "List every note, oldest first, one per line as `#<id>: <text>`.",
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn list_notes(&self) -> String {
        render(&self.store.all().await, "no notes yet")
    }

    #[tool(
        description = "Search the notes: returns every note whose text contains the query \
                       (case-insensitive), one per line as `#<id>: <text>`.",
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn search(&self, Parameters(SearchParams { query }): Parameters<SearchParams>) -> String {
        let matches = self.store.search(&query).await;
        render(&matches, &format!("no notes match {query:?}"))
    }

    #[tool(
        description = "Delete every note (for all sessions). Returns how many were removed.",
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = true)
    )]
    async fn clear_notes(&self) -> String {
        let count = self.store.clear().await;
        tracing::info!(count, "notes cleared");
        format!("removed {count} note(s)")
    }
}

#[prompt_router]
impl NotesServer {
    #[prompt(
        name = "summarize_notes",
        description = "Ask the assistant to summarize every note in the notebook."
    )]
    async fn summarize_notes(&self) -> GetPromptResult {
        let notes = self.store.all().await;
        let text = if notes.is_empty() {
            "My notebook is empty. Tell me so, and suggest what I could start writing down."
                .to_string()
        } else {
            format!(
                "Summarize my {} note(s) in a few bullet points, grouping related ones and \
                 listing any open to-dos at the end:\n\n{}",
                notes.len(),
                render(&notes, "")
            )
        };
        GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
            .with_description("Summarize the notebook")
    }
}

#[tool_handler(router = self.tool_router)]
#[prompt_handler(router = self.prompt_router)]
impl ServerHandler for NotesServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .enable_resources()
                .build(),
        )
        .with_server_info(
            Implementation::new("vmcp-example-notes", env!("CARGO_PKG_VERSION"))
                .with_title("Example notes backend"),
        )
        .with_instructions(
            "An in-memory notebook shared by every session (lost on restart). Add notes with \
             `add_note`, find them with `search`, or read notes://all.",
        )
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new(ALL_NOTES_URI, "all-notes")
                .with_title("All notes")
                .with_description("Every note, oldest first, one per line as `#<id>: <text>`.")
                .with_mime_type("text/plain"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri;
        if uri != ALL_NOTES_URI {
            return Err(ErrorData::resource_not_found(
                format!("no such resource: {uri}"),
                Some(serde_json::json!({ "uri": uri })),
            ));
        }
        let text = render(&self.store.all().await, "");
        Ok(ReadResourceResult::new(vec![
            ResourceContents::text(text, uri).with_mime_type("text/plain"),
        ])
        .into())
    }
}

fn tool_error(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message)])
}

/// `#<id>: <text>` lines, or `empty` when there are no notes.
fn render(notes: &[Note], empty: &str) -> String {
    if notes.is_empty() {
        return empty.to_string();
    }
    notes.iter().map(|note| format!("#{}: {}", note.id, note.text)).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn store_is_shared_between_clones() {
        let store = NoteStore::default();
        let other = store.clone();
        store.add("buy milk".into()).await;
        other.add("Call Mum".into()).await;
        assert_eq!(other.all().await.len(), 2);
        let found = store.search("MILK").await;
        assert_eq!(found.len(), 1);
        assert_eq!(render(&found, ""), "#1: buy milk");
        assert_eq!(store.clear().await, 2);
        assert!(other.all().await.is_empty());
        // Ids keep increasing after a clear.
        assert_eq!(store.add("again".into()).await.id, 3);
    }
}
