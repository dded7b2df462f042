#!/usr/bin/env python3
# Writes deploy/grafana/dashboards/sdr-caddy.json (the sdr-caddy Grafana dashboard).
# Edit the rows here, then: python3 deploy/grafana/gen_dashboard.py > deploy/grafana/dashboards/sdr-caddy.json
# (tests/deploy checks that the committed JSON is this script's output).
#
# Portable: every panel queries the data source of the $datasource variable (any Prometheus
# the importing Grafana has; the provisioned one by default), and every selector is narrowed
# to the $instance variable (the sdr-caddy instances that source scrapes).
import json
import re
DS = {"type": "prometheus", "uid": "${datasource}"}


def narrow(expr):
    """Adds instance=~"$instance" to every caddy_* selector of expr."""
    def sel(m):
        inner = m.group(3)
        return '%s{%sinstance=~"$instance"}' % (m.group(1), inner + ", " if inner else "")
    return re.sub(r'\b(caddy_[a-z0-9_]+)(\{([^}]*)\})?', sel, expr)


# Value mappings of panels whose values are states, by panel title.
GATE_MODES = [{"type": "value", "options": {
    "0": {"text": "ARMED", "color": "green", "index": 0},
    "1": {"text": "HOLD", "color": "orange", "index": 1},
    "2": {"text": "ESTOP", "color": "red", "index": 2},
}}]
rows = []  # (row title, [(panel title, unit, [(expr, legend)], description)])
rows.append(("HTTP (Caddy)", [
  ("Requests per second by server", "reqps", [("sum by (server) (rate(caddy_http_requests_total[$__rate_interval]))", "{{server}}")], "Requests the HTTP servers handled: the edge, the transport-compatible site, the metrics site."),
  ("Request duration p99 by server", "s", [("histogram_quantile(0.99, sum by (le, server) (rate(caddy_http_request_duration_seconds_bucket[$__rate_interval])))", "p99 {{server}}")], "Time to handle a request; WebSocket upgrades count until the connection closes."),
  ("Responses by code", "reqps", [("sum by (code) (rate(caddy_http_request_duration_seconds_count[$__rate_interval]))", "{{code}}"), ("sum(caddy_http_requests_in_flight)", "in flight")], "5xx from reverse_proxy: the Node service or rosbridge is down; 503 on /health: the ring reader is stuck."),
]))
rows.append(("Video stream (sdr_stream)", [
  ("Clients", "short", [("sum by (stream) (caddy_sdr_stream_clients)", "{{stream}}")], "WebSocket clients per stream."),
  ("Frames in / out per second", "short", [("sum by (stream) (rate(caddy_sdr_stream_frames_in_total[$__rate_interval]))", "in {{stream}}"), ("sum by (stream) (rate(caddy_sdr_stream_frames_out_total[$__rate_interval]))", "out {{stream}}")], "Frames read from the source, and frames written to clients (one per client)."),
  ("Bytes out per second", "Bps", [("sum by (stream) (rate(caddy_sdr_stream_bytes_out_total[$__rate_interval]))", "{{stream}}")], "Bytes written to WebSocket clients."),
  ("Delivery latency (source read to socket write)", "s", [("histogram_quantile(0.5, sum by (le, stream) (rate(caddy_sdr_stream_delivery_seconds_bucket[$__rate_interval])))", "p50 {{stream}}"), ("histogram_quantile(0.99, sum by (le, stream) (rate(caddy_sdr_stream_delivery_seconds_bucket[$__rate_interval])))", "p99 {{stream}}")], "Above one frame interval (16.7 ms at 60 fps) at p99 means clients see stutter."),
  ("Lag skips, keyframe waits and timeouts", "short", [("sum by (stream) (rate(caddy_sdr_stream_lag_skips_total[$__rate_interval]))", "lag skips {{stream}}"), ("sum by (stream) (rate(caddy_sdr_stream_keyframe_waits_total[$__rate_interval]))", "keyframe waits {{stream}}"), ("sum by (stream) (rate(caddy_sdr_stream_keyframe_timeouts_total[$__rate_interval]))", "keyframe timeouts {{stream}}"), ("sum by (stream) (rate(caddy_sdr_stream_idr_requests_total[$__rate_interval]))", "IDR requests {{stream}}")], "Clients that fell behind, waited for a keyframe, or were closed waiting for one."),
  ("Refused and ignored", "short", [("sum by (stream) (rate(caddy_sdr_stream_origin_rejected_total[$__rate_interval]))", "origin refused {{stream}}"), ("sum by (stream) (rate(caddy_sdr_stream_clients_rejected_total[$__rate_interval]))", "max_clients refused {{stream}}"), ("sum by (stream) (rate(caddy_sdr_stream_client_messages_ignored_total[$__rate_interval]))", "ignored messages {{stream}}"), ("sum by (stream) (rate(caddy_sdr_stream_telemetry_dropped_total[$__rate_interval]))", "telemetry dropped {{stream}}")], "Upgrades refused, client messages ignored, telemetry dropped for full client queues."),
]))
rows.append(("Shared-memory ring", [
  ("Ring frames per second", "short", [("sum by (path) (rate(caddy_sdr_stream_ring_frames_total[$__rate_interval]))", "{{path}}")], "Frames the ring reader delivered; 0 while clients watch means the simulator stopped writing."),
  ("Ring attached", "short", [("caddy_sdr_stream_ring_attached", "{{path}}")], "1 while the ring file is mapped."),
  ("Ring errors per second", "short", [("sum by (path) (rate(caddy_sdr_stream_ring_torn_reads_total[$__rate_interval]))", "torn {{path}}"), ("sum by (path) (rate(caddy_sdr_stream_ring_crc_failures_total[$__rate_interval]))", "CRC {{path}}"), ("sum by (path) (rate(caddy_sdr_stream_ring_malformed_total[$__rate_interval]))", "malformed {{path}}"), ("sum by (path) (rate(caddy_sdr_stream_ring_faults_total[$__rate_interval]))", "faults {{path}}"), ("sum by (path) (rate(caddy_sdr_stream_ring_size_mismatch_total[$__rate_interval]))", "size mismatch {{path}}")], "Discarded copies; faults are truncations under the mapping."),
  ("Gaps, restarts, remaps", "short", [("sum by (path) (increase(caddy_sdr_stream_ring_gaps_total[$__rate_interval]))", "gaps {{path}}"), ("sum by (path) (increase(caddy_sdr_stream_ring_restarts_total[$__rate_interval]))", "writer restarts {{path}}"), ("sum by (path) (increase(caddy_sdr_stream_ring_remaps_total[$__rate_interval]))", "remaps {{path}}")], "Frames the reader missed, writer restarts and file replacements."),
]))
rows.append(("NATS and the safety gate (sdr_nats)", [
  ("Safety gate mode", "short", [("max by (stream) (caddy_sdr_gate_mode)", "{{stream}}")], "HOLD: video older than hold, motion commands dropped. ESTOP: video older than estop, estop published."),
  ("NATS connected", "short", [("min(caddy_sdr_nats_connected)", "connected")], "0: commands are answered unavailable, telemetry stops."),
  ("Commands per second by status", "short", [("sum by (status) (rate(caddy_sdr_nats_commands_total[$__rate_interval]))", "{{status}}")], "published, rejected (invalid, not allowed, rate), gated (safety gate), unavailable (NATS down)."),
  ("Telemetry per second by result", "short", [("sum by (result) (rate(caddy_sdr_nats_telemetry_messages_total[$__rate_interval]))", "{{result}}"), ("sum(rate(caddy_sdr_nats_ws_telemetry_dropped_total[$__rate_interval]))", "dropped (/nats/ws clients)")], "Relayed, and dropped for size or subject length."),
  ("Gate transitions", "short", [("sum by (stream, mode) (increase(caddy_sdr_gate_transitions_total[$__rate_interval]))", "{{stream}} {{mode}}")], "Entries into each mode."),
  ("NATS reconnects and errors", "short", [("sum(increase(caddy_sdr_nats_reconnects_total[$__rate_interval]))", "reconnects"), ("sum(increase(caddy_sdr_nats_disconnects_total[$__rate_interval]))", "disconnects"), ("sum(increase(caddy_sdr_nats_async_errors_total[$__rate_interval]))", "async errors"), ("sum(caddy_sdr_nats_ws_clients)", "/nats/ws clients")], "Connection churn; async errors are mostly slow-consumer telemetry drops."),
]))
rows.append(("Encoder (sdr_encoder)", [
  ("Encode time", "s", [("histogram_quantile(0.5, sum by (le, encoder) (rate(caddy_sdr_encoder_encode_seconds_bucket[$__rate_interval])))", "p50 {{encoder}}"), ("histogram_quantile(0.99, sum by (le, encoder) (rate(caddy_sdr_encoder_encode_seconds_bucket[$__rate_interval])))", "p99 {{encoder}}")], "Per frame, conversion included; above the frame interval the encoder skips frames."),
  ("Encoded fps and skipped frames", "short", [("sum by (encoder) (caddy_sdr_encoder_fps)", "fps {{encoder}}"), ("sum by (encoder) (rate(caddy_sdr_encoder_skipped_total[$__rate_interval]))", "skipped/s {{encoder}}"), ("sum by (encoder) (rate(caddy_sdr_encoder_keyframes_total[$__rate_interval]))", "keyframes/s {{encoder}}")], "Skipped: raw frames passed over because encoding fell behind."),
  ("Backend in use and fallbacks", "short", [("max by (encoder, backend) (caddy_sdr_encoder_backend)", "{{encoder}} {{backend}}"), ("sum by (encoder, backend) (increase(caddy_sdr_encoder_fallbacks_total[$__rate_interval]))", "fallback from {{backend}}"), ("sum by (encoder) (increase(caddy_sdr_encoder_errors_total[$__rate_interval]))", "errors {{encoder}}")], "1 for the FFmpeg encoder in use (h264_nvenc, libx264, ...)."),
]))
rows.append(("Scale-out: origin and edges over NATS", [
  ("Edge: last frame age", "s", [("max by (instance, subject) (caddy_sdr_stream_nats_last_frame_age_seconds)", "{{instance}} {{subject}}")], "Over 1 s: that edge's safety gate holds. -1 before the first frame."),
  ("Frames per second: published and received", "short", [("sum by (subject) (rate(caddy_sdr_stream_publish_frames_total[$__rate_interval]))", "published {{subject}}"), ("sum by (instance, subject) (rate(caddy_sdr_stream_nats_frames_total[$__rate_interval]))", "received {{instance}} {{subject}}")], "What the origin published, and what each edge received."),
  ("Losses", "short", [("sum by (subject, reason) (rate(caddy_sdr_stream_publish_dropped_total[$__rate_interval]))", "publish dropped {{reason}}"), ("sum by (instance, subject) (increase(caddy_sdr_stream_nats_gaps_total[$__rate_interval]))", "edge gaps {{instance}}"), ("sum by (instance, subject, reason) (increase(caddy_sdr_stream_nats_discarded_total[$__rate_interval]))", "edge discarded {{reason}}")], "Frames the origin could not publish, and frames edges missed or discarded."),
]))
rows.append(("WebRTC (0x03 and WHEP)", [
  ("WebRTC sessions", "short", [("sum by (stream) (caddy_sdr_webrtc_sessions)", "{{stream}}")], "Open sessions, over /stream/ws (0x03) and WHEP."),
  ("WebRTC frames per second", "short", [("sum by (stream) (rate(caddy_sdr_webrtc_frames_sent_total[$__rate_interval]))", "sent {{stream}}"), ("sum by (stream) (rate(caddy_sdr_webrtc_frames_dropped_total[$__rate_interval]))", "dropped {{stream}}"), ("sum by (stream) (rate(caddy_sdr_webrtc_keyframe_requests_total[$__rate_interval]))", "keyframe requests {{stream}}")], "Sent per session; drops mean a session fell behind and waits for a keyframe."),
  ("DataChannel and signaling messages", "short", [("sum by (channel, result) (rate(caddy_sdr_webrtc_messages_total[$__rate_interval]))", "{{channel}} {{result}}")], "control and commands published, malformed, rate_limited, gated; signaling answered, bad_offer, ..."),
]))
rows.append(("ROS (sdr_ros)", [
  ("ROS clients and upstream subscriptions", "short", [("sum(caddy_sdr_ros_clients)", "clients"), ("sum(caddy_sdr_ros_upstream_subscriptions)", "upstream subscriptions")], "Browsers on /ros, and topics subscribed on rosbridge_server (flat however many browsers)."),
  ("ROS messages per second", "short", [("sum by (direction) (rate(caddy_sdr_ros_messages_total[$__rate_interval]))", "{{direction}}")], "rosbridge messages by direction."),
  ("ROS drops and denials", "short", [("sum by (reason) (rate(caddy_sdr_ros_drops_total[$__rate_interval]))", "drop {{reason}}"), ("sum by (kind) (rate(caddy_sdr_ros_denials_total[$__rate_interval]))", "denied {{kind}}"), ("sum(rate(caddy_sdr_ros_service_timeouts_total[$__rate_interval]))", "service timeouts")], "Messages dropped (queue, throttle, rate_limit, gated), ops refused by the allowlists, service calls timed out."),
]))
panels = []
pid = 1
y = 0
for title, ps in rows:
    panels.append({"type": "row", "title": title, "id": pid, "collapsed": False, "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []})
    pid += 1; y += 1
    for i, (pt, unit, targets, desc) in enumerate(ps):
        defaults = {"unit": unit}
        kind = "timeseries"
        if pt == "Safety gate mode":
            defaults = {"unit": "none", "mappings": GATE_MODES, "min": 0, "max": 2,
                        "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}, {"color": "orange", "value": 1}, {"color": "red", "value": 2}]}}
            kind = "state-timeline"
        panels.append({
            "type": kind, "title": pt, "description": desc, "id": pid, "datasource": DS,
            "gridPos": {"x": (i % 3) * 8, "y": y + (i // 3) * 8, "w": 8, "h": 8},
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
            "targets": [{"refId": chr(65 + j), "datasource": DS, "expr": narrow(e), "legendFormat": l} for j, (e, l) in enumerate(targets)],
        })
        pid += 1
    y += ((len(ps) + 2) // 3) * 8
INSTANCES = "label_values(caddy_config_last_reload_successful, instance)"
TEMPLATING = [
    {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
     "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1, "regex": ""},
    {"name": "instance", "label": "Instance", "type": "query", "datasource": DS,
     "query": {"query": INSTANCES, "refId": "instances"}, "definition": INSTANCES,
     "current": {}, "hide": 0, "includeAll": True, "allValue": ".*", "multi": True, "options": [],
     "refresh": 2, "regex": "", "sort": 1},
]
dash = {
    "uid": "sdr-caddy", "title": "sdr-caddy", "tags": ["sdr-caddy", "SDR_OS"], "timezone": "browser",
    "schemaVersion": 39, "version": 1, "editable": True, "refresh": "10s",
    "time": {"from": "now-1h", "to": "now"}, "templating": {"list": TEMPLATING}, "annotations": {"list": []},
    "panels": panels,
}
print(json.dumps(dash, indent=2))
