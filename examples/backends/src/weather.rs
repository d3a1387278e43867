//! The `weather` example backend: deterministic fake forecasts (no network access).

use std::time::Duration;

use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    handler::server::{
        router::{prompt::PromptRouter, tool::ToolRouter},
        wrapper::Parameters,
    },
    model::{
        CallToolResult, ContentBlock, GetPromptResult, Implementation, ListResourceTemplatesResult,
        ListResourcesResult, PaginatedRequestParams, ProgressNotificationParam, PromptMessage,
        ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
        ResourceContents, ResourceTemplate, Role, ServerCapabilities, ServerConfig,
    },
    prompt, prompt_handler, prompt_router,
    service::RequestContext,
    tool, tool_handler, tool_router,
};
use schemars::JsonSchema;
use serde::Deserialize;

const CITIES_URI: &str = "weather://cities";
const TODAY_TEMPLATE: &str = "weather://{city}/today";
const CITIES: &[&str] =
    &["Amsterdam", "Berlin", "Lisbon", "London", "New York", "Paris", "Sydney", "Tokyo"];
const CONDITIONS: &[&str] =
    &["sunny", "partly cloudy", "cloudy", "light rain", "showers", "windy", "foggy", "snow"];
const DEFAULT_DAYS: u32 = 3;
const MAX_DAYS: u32 = 7;
const MAX_STEPS: u32 = 20;
const STEP_DELAY: Duration = Duration::from_millis(200);

/// Arguments of the `forecast` tool.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ForecastParams {
    /// City to forecast, e.g. "Lisbon". Any name works: the data is fake but deterministic.
    pub city: String,
    /// Number of days to forecast, from 1 to 7. Defaults to 3.
    #[schemars(range(min = 1, max = 7))]
    pub days: Option<u32>,
}

/// Arguments of the `search` tool.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SearchParams {
    /// Free-text query, for example "storms in Europe".
    pub query: String,
}

/// Arguments of the `slow_report` tool.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SlowReportParams {
    /// Number of steps, from 1 to 20; each takes ~200 ms and reports progress if asked to.
    #[schemars(range(min = 1, max = 20))]
    pub steps: u32,
}

/// Arguments of the `plan_trip` prompt.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct PlanTripParams {
    /// Destination city.
    pub city: String,
}

/// One weather session. Stateless apart from the routers, so each session gets its own.
#[derive(Debug, Clone)]
pub struct WeatherServer {
    tool_router: ToolRouter<Self>,
    prompt_router: PromptRouter<Self>,
}

impl WeatherServer {
    pub fn new() -> Self {
        Self { tool_router: Self::tool_router(), prompt_router: Self::prompt_router() }
    }
}

#[tool_router]
impl WeatherServer {
    #[tool(
        description = "Fake but deterministic multi-day weather forecast for a city: one line \
                       per day with conditions and high/low temperatures in °C.",
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn forecast(
        &self,
        Parameters(ForecastParams { city, days }): Parameters<ForecastParams>,
    ) -> CallToolResult {
        let city = city.trim();
        if city.is_empty() {
            return tool_error("`city` must not be empty");
        }
        let days = days.unwrap_or(DEFAULT_DAYS);
        if !(1..=MAX_DAYS).contains(&days) {
            return tool_error(format!("`days` must be between 1 and {MAX_DAYS}, got {days}"));
        }
        CallToolResult::success(vec![ContentBlock::text(forecast_text(city, days))])
    }

    #[tool(
        description = "Search the weather service. Returns a short text result for the query.",
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn search(&self, Parameters(SearchParams { query }): Parameters<SearchParams>) -> String {
        format!("weather results for {query}")
    }

    #[tool(
        description = "Produce a weather report slowly, in `steps` steps of about 200 ms each. \
                       Sends progress notifications when the call carries a progressToken; \
                       useful to test progress and cancellation through the gateway.",
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn slow_report(
        &self,
        Parameters(SlowReportParams { steps }): Parameters<SlowReportParams>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        if !(1..=MAX_STEPS).contains(&steps) {
            return tool_error(format!("`steps` must be between 1 and {MAX_STEPS}, got {steps}"));
        }
        let progress_token = context.meta.get_progress_token();
        for step in 1..=steps {
            tokio::select! {
                () = context.ct.cancelled() => {
                    tracing::info!(step, steps, "slow_report cancelled");
                    return tool_error(format!("cancelled at step {step} of {steps}"));
                }
                () = tokio::time::sleep(STEP_DELAY) => {}
            }
            if let Some(token) = &progress_token {
                let progress = ProgressNotificationParam::new(token.clone(), f64::from(step))
                    .with_total(f64::from(steps))
                    .with_message(format!("step {step} of {steps}"));
                if let Err(error) = context.peer.notify_progress(progress).await {
                    tracing::warn!(%error, "cannot send progress notification");
                }
            }
        }
        CallToolResult::success(vec![ContentBlock::text(format!(
            "weather report complete after {steps} steps"
        ))])
    }
}

#[prompt_router]
impl WeatherServer {
    #[prompt(
        name = "plan_trip",
        description = "Ask the assistant to plan a trip to a city around the 3-day forecast."
    )]
    async fn plan_trip(
        &self,
        Parameters(PlanTripParams { city }): Parameters<PlanTripParams>,
    ) -> Result<GetPromptResult, ErrorData> {
        let city = city.trim();
        if city.is_empty() {
            return Err(ErrorData::invalid_params("`city` must not be empty", None));
        }
        let forecast = forecast_text(city, DEFAULT_DAYS);
        Ok(GetPromptResult::new(vec![PromptMessage::new_text(
            Role::User,
            format!(
                "I am planning a 3-day trip to {city}. Here is the forecast:\n\n{forecast}\n\n\
                 Suggest a day-by-day plan that fits the weather, with one indoor alternative \
                 for each day, and tell me what to pack."
            ),
        )])
        .with_description(format!("Plan a trip to {city}")))
    }
}

#[tool_handler(router = self.tool_router)]
#[prompt_handler(router = self.prompt_router)]
impl ServerHandler for WeatherServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .enable_resources()
                .build(),
        )
        .with_server_info(
            Implementation::new("vmcp-example-weather", env!("CARGO_PKG_VERSION"))
                .with_title("Example weather backend"),
        )
        .with_instructions(
            "Fake weather data for trying the vmcp gateway. Use `forecast` for a city's \
             forecast, read weather://cities for the featured cities, or \
             weather://{city}/today for today's weather in one city.",
        )
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new(CITIES_URI, "cities")
                .with_title("Featured cities")
                .with_description("The cities the weather service features, one per line.")
                .with_mime_type("text/plain"),
        ]))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new(TODAY_TEMPLATE, "today")
                .with_title("Today's weather")
                .with_description("Today's (fake) weather in one city, e.g. weather://Paris/today.")
                .with_mime_type("text/plain"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri;
        let text = if uri == CITIES_URI {
            CITIES.join("\n")
        } else if let Some(city) = today_city(&uri) {
            forecast_text(city, 1)
        } else {
            return Err(ErrorData::resource_not_found(
                format!("no such resource: {uri}"),
                Some(serde_json::json!({ "uri": uri })),
            ));
        };
        Ok(ReadResourceResult::new(vec![
            ResourceContents::text(text, uri).with_mime_type("text/plain"),
        ])
        .into())
    }
}

fn tool_error(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message)])
}

/// The `{city}` of `weather://{city}/today`, if `uri` matches the template.
fn today_city(uri: &str) -> Option<&str> {
    let city = uri.strip_prefix("weather://")?.strip_suffix("/today")?;
    (!city.is_empty() && !city.contains('/')).then_some(city)
}

/// A deterministic fake forecast: the same city (case-insensitive) always gets the same text.
fn forecast_text(city: &str, days: u32) -> String {
    let mut state = seed(city);
    let mut lines = vec![format!("{days}-day forecast for {city}:")];
    for day in 1..=days {
        state = next(state);
        let condition = CONDITIONS[(state % CONDITIONS.len() as u64) as usize];
        let high = 8 + (state >> 8) % 22;
        let low = high.saturating_sub(4 + (state >> 16) % 7);
        lines.push(format!("Day {day}: {condition}, high {high}°C, low {low}°C"));
    }
    lines.join("\n")
}

/// FNV-1a over the lower-cased name.
fn seed(city: &str) -> u64 {
    city.to_lowercase().bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
    })
}

/// One step of a 64-bit linear congruential generator.
fn next(state: u64) -> u64 {
    state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forecast_is_deterministic_and_case_insensitive() {
        assert_eq!(forecast_text("Paris", 3), forecast_text("Paris", 3));
        let lower = forecast_text("paris", 2);
        let upper = forecast_text("PARIS", 2);
        assert_eq!(
            lower.lines().skip(1).collect::<Vec<_>>(),
            upper.lines().skip(1).collect::<Vec<_>>()
        );
        assert_eq!(forecast_text("Paris", 5).lines().count(), 6);
    }

    #[test]
    fn today_template_matches_only_one_segment() {
        assert_eq!(today_city("weather://Paris/today"), Some("Paris"));
        assert_eq!(today_city("weather:///today"), None);
        assert_eq!(today_city("weather://a/b/today"), None);
        assert_eq!(today_city("weather://cities"), None);
    }
}
