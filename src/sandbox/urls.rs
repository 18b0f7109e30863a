//! The sandbox API's URL layout below `<base>/api/v1/sandbox/`: `tasks/<id>/downloads`,
//! `tasks/<id>`, `tasks/?from=…`, `health`, `version`.
//!
//! The configuration holds only the validated base URL (`sandbox.url`, stored with a trailing
//! slash and without any API path the operator pasted); where the API lives below it is the
//! client's knowledge, kept here.

use url::Url;

use crate::config::TaskId;

/// `<base>/api/v1/sandbox/tasks`, built once per client: a request appends two segments to it.
pub fn tasks_url(base: &Url) -> Url {
    let mut url = base.clone();
    url.path_segments_mut()
        // Invariant: validation admits only http(s) URLs, which always have a path.
        .expect("an http(s) URL can be a base")
        .pop_if_empty()
        .extend(["api", "v1", "sandbox", "tasks"]);
    url
}

/// A task's downloads URL below [`tasks_url`]: appending two segments to a parsed URL is far
/// cheaper per request than building and parsing a string.
pub fn downloads_url(tasks_url: &Url, id: &TaskId) -> Url {
    let mut url = tasks_url.clone();
    url.path_segments_mut()
        .expect("an http(s) URL can be a base")
        .extend([id.as_str(), "downloads"]);
    url
}

/// One task's parameters: `<tasks>/<id>`.
pub fn task_url(tasks_url: &Url, id: &TaskId) -> Url {
    let mut url = tasks_url.clone();
    url.path_segments_mut()
        .expect("an http(s) URL can be a base")
        .push(id.as_str());
    url
}

/// A page of the task list, newest first: `<tasks>/?from=…&count=…&sort_by=created&descending=true`.
pub fn list_url(tasks_url: &Url, from: usize, count: usize) -> Url {
    let mut url = tasks_url.clone();
    url.path_segments_mut()
        .expect("an http(s) URL can be a base")
        .push("");
    url.query_pairs_mut()
        .append_pair("from", &from.to_string())
        .append_pair("count", &count.to_string())
        .append_pair("sort_by", "created")
        .append_pair("descending", "true");
    url
}

/// `<base>/api/v1/sandbox/<name>`, for `health` and `version`.
pub fn sandbox_url(tasks_url: &Url, name: &str) -> Url {
    let mut url = tasks_url.clone();
    url.path_segments_mut()
        .expect("an http(s) URL can be a base")
        .pop()
        .push(name);
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const ID: &str = "0d5b4e44-4c0e-4f0b-9a57-3f2d1b9e6c71";

    #[test]
    fn a_task_s_downloads_live_below_the_configured_base_once_whatever_path_was_pasted() {
        for (given, base) in [
            ("https://sandbox.example", "https://sandbox.example/"),
            ("https://sandbox.example/", "https://sandbox.example/"),
            (
                "http://10.0.0.5:8443/proxy/krs",
                "http://10.0.0.5:8443/proxy/krs/",
            ),
            (
                "https://sandbox.example/api/v1/sandbox/",
                "https://sandbox.example/",
            ),
            ("https://h/krs/api/v1/sandbox/", "https://h/krs/"),
            ("https://h/myapi/v1/sandbox", "https://h/myapi/v1/sandbox/"),
        ] {
            let yaml = format!(
                "sandbox:\n  url: {given}\n  username: u\n  password: p\ntasks:\n  - {ID}\n"
            );
            let config = Config::from_yaml_str(&yaml, std::path::Path::new("t.yml"), &|_| None)
                .expect("valid config");
            let id = TaskId::parse(ID).expect("valid id");
            assert_eq!(
                downloads_url(&tasks_url(&config.sandbox.url), &id).as_str(),
                format!("{base}api/v1/sandbox/tasks/{ID}/downloads"),
                "{given}"
            );
        }
    }

    #[test]
    fn the_lifecycle_endpoints_live_beside_the_downloads() {
        let base = Url::parse("https://h/krs/").expect("a URL");
        let tasks = tasks_url(&base);
        let id = TaskId::parse(ID).expect("valid id");
        assert_eq!(
            task_url(&tasks, &id).as_str(),
            format!("https://h/krs/api/v1/sandbox/tasks/{ID}")
        );
        assert_eq!(
            list_url(&tasks, 500, 100).as_str(),
            "https://h/krs/api/v1/sandbox/tasks/?from=500&count=100&sort_by=created&descending=true"
        );
        assert_eq!(
            sandbox_url(&tasks, "health").as_str(),
            "https://h/krs/api/v1/sandbox/health"
        );
        assert_eq!(
            sandbox_url(&tasks, "version").as_str(),
            "https://h/krs/api/v1/sandbox/version"
        );
    }
}
