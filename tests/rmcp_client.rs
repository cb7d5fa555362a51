//! An independent MCP implementation — rmcp's own client — against the
//! broker, over the agent's socket: the handshake, listing and calls work
//! for a client we did not write.

use corral_tests::broker::{BrokerOptions, TestBroker};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use serde_json::json;

#[test]
fn rmcp_client_lists_and_calls_through_the_broker() {
    let mut b = TestBroker::start(BrokerOptions::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let socket = b.socket("assistant");
    rt.block_on(async move {
        let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
        let (read, write) = stream.into_split();
        let client = ().serve((read, write)).await.expect("initialize");
        let info = client.peer_info().expect("server info after initialize");
        assert_eq!(
            info.server_info.as_ref().map(|s| s.name.as_str()),
            Some("corral-broker")
        );
        assert_eq!(info.protocol_version.as_str(), "2025-11-25");

        let mut names: Vec<String> = client
            .list_all_tools()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name.to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "echo",
                "files_list",
                "files_read",
                "files_write",
                "http_get"
            ]
        );

        let args = json!({"message": "from rmcp"})
            .as_object()
            .cloned()
            .unwrap();
        let ok = client
            .call_tool(CallToolRequestParams::new("echo").with_arguments(args))
            .await
            .unwrap();
        assert_eq!(ok.is_error, Some(false), "{ok:?}");
        assert_eq!(ok.structured_content.unwrap()["message"], "from rmcp");

        let args = json!({"path": "top.txt", "content": "x"})
            .as_object()
            .cloned()
            .unwrap();
        let denied = client
            .call_tool(CallToolRequestParams::new("files_write").with_arguments(args))
            .await
            .unwrap();
        assert_eq!(denied.is_error, Some(true), "{denied:?}");
        client.cancel().await.unwrap();
    });
    b.stop();
    assert_eq!(
        b.records().len(),
        3,
        "echo call + outcome, files_write denial"
    );
}
