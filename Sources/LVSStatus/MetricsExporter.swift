import LVSConfiguration
import LVSControlProtocol
import LVSCore
import LVSDaemon
import LVSPacket
import LVSSystem
import Prometheus

/// `/metrics`: the Prometheus text format. The service and real-server
/// series carry the names and labels of node_exporter's ipvs collector, so
/// that dashboards built on it work unchanged; lvsd's own series are `lvsd_…`.
public enum MetricsExporter {
    /// A registry per scrape: series of removed services vanish with them.
    public static func render(_ report: StatusReport) -> [UInt8] {
        let registry = PrometheusCollectorRegistry()
        func counter(_ name: String, _ help: String, _ labels: [(String, String)] = [], _ value: UInt64) {
            let d = MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
            let c = labels.isEmpty ? registry.makeCounter(descriptor: d) : registry.makeCounter(descriptor: d, labels: labels)
            c.increment(by: Int64(clamping: value))
        }
        func gauge(_ name: String, _ help: String, _ labels: [(String, String)] = [], _ value: Double) {
            let d = MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
            let g = labels.isEmpty ? registry.makeGauge(descriptor: d) : registry.makeGauge(descriptor: d, labels: labels)
            g.set(value)
        }

        // node_exporter's, from /proc/net/ip_vs_stats.
        let t = report.totals
        counter("node_ipvs_connections_total", "The total number of connections made.", [], t.connections)
        counter("node_ipvs_incoming_packets_total", "The total number of incoming packets.", [], t.inPackets)
        counter("node_ipvs_outgoing_packets_total", "The total number of outgoing packets.", [], t.outPackets)
        counter("node_ipvs_incoming_bytes_total", "The total amount of incoming data.", [], t.inBytes)
        counter("node_ipvs_outgoing_bytes_total", "The total amount of outgoing data.", [], t.outBytes)

        // node_exporter's, from /proc/net/ip_vs: summed over equal label sets as it does.
        var backends: [[String]: (active: UInt64, inactive: UInt64, weight: UInt64)] = [:]
        var order: [[String]] = []
        for svc in report.table.services {
            let local = serviceLabels(svc.service.key)
            counter("lvsd_service_connections_total", "Connections scheduled by the virtual service.", local, svc.stats.connections)
            counter("lvsd_service_incoming_packets_total", "Packets from clients to the virtual service.", local, svc.stats.inPackets)
            counter("lvsd_service_outgoing_packets_total", "Packets from real servers back to clients.", local, svc.stats.outPackets)
            counter("lvsd_service_incoming_bytes_total", "Bytes from clients to the virtual service.", local, svc.stats.inBytes)
            counter("lvsd_service_outgoing_bytes_total", "Bytes from real servers back to clients.", local, svc.stats.outBytes)
            for server in svc.servers {
                let labels = backendLabels(svc.service.key, server.server)
                let values = labels.map(\.1)
                if backends[values] == nil { order.append(values) }
                var b = backends[values] ?? (0, 0, 0)
                b.active += UInt64(server.activeConnections)
                b.inactive += UInt64(server.inactiveConnections)
                b.weight += UInt64(max(0, server.server.weight))
                backends[values] = b
                counter("lvsd_backend_connections_total", "Connections scheduled to the real server.", labels, server.stats.connections)
                counter("lvsd_backend_incoming_packets_total", "Packets forwarded to the real server.", labels, server.stats.inPackets)
                counter("lvsd_backend_outgoing_packets_total", "Packets from the real server back to clients.", labels, server.stats.outPackets)
                counter("lvsd_backend_incoming_bytes_total", "Bytes forwarded to the real server.", labels, server.stats.inBytes)
                counter("lvsd_backend_outgoing_bytes_total", "Bytes from the real server back to clients.", labels, server.stats.outBytes)
                gauge(
                    "lvsd_backend_connections_persistent", "Persistence templates pointing at the real server.", labels,
                    Double(server.persistentConnections))
            }
        }
        for values in order {
            let labels = zip(backendLabelNames, values).map { ($0, $1) }
            let b = backends[values]!
            gauge("node_ipvs_backend_connections_active", "The current active connections by local and remote address.", labels, Double(b.active))
            gauge("node_ipvs_backend_connections_inactive", "The current inactive connections by local and remote address.", labels, Double(b.inactive))
            gauge("node_ipvs_backend_weight", "The current backend weight by local and remote address.", labels, Double(b.weight))
        }

        // lvsd's own.
        for h in report.table.health {
            let server = RealServerConfiguration(address: h.address, port: h.port)
            gauge("lvsd_backend_up", "1 when the real server passes its health checks, 0 when it fails them.", backendLabels(h.service, server), h.up ? 1 : 0)
        }
        for reason in DropReason.all.map(\.description) {
            counter("lvsd_drops_total", "Frames lvsd dropped, by reason.", [("reason", reason)], report.table.drops[reason] ?? 0)
        }
        for e in report.engines {
            let w = String(e.worker)
            counter(
                "lvsd_worker_packets_total", "Virtual-service packets a worker forwarded, by direction.", [("worker", w), ("direction", "in")],
                e.totals.inPackets)
            counter(
                "lvsd_worker_packets_total", "Virtual-service packets a worker forwarded, by direction.", [("worker", w), ("direction", "out")],
                e.totals.outPackets)
            counter("lvsd_worker_drops_total", "Frames a worker dropped.", [("worker", w)], e.drops)
            counter("lvsd_toa_inserted_total", "FULLNAT TOA options inserted.", [("worker", w)], e.toaInserted)
            counter("lvsd_toa_failures_total", "FULLNAT packets sent without TOA because it did not fit.", [("worker", w)], e.toaFailures)
            counter("lvsd_icmp_sent_total", "ICMP errors lvsd sent (fragmentation needed, packet too big, time exceeded).", [("worker", w)], e.icmpSent)
            counter("lvsd_proxy_headers_total", "PROXY protocol headers sent to real servers (a retransmitted one again).", [("worker", w)], e.proxyHeaders)
            counter("lvsd_synproxy_cookies_total", "SYNs the SYN proxy answered with a cookie.", [("worker", w)], e.synproxyCookies)
            for (path, n) in [("whole", e.superFramesWhole), ("cut", e.superFramesCut)] {
                counter(
                    "lvsd_super_frames_total", "TCP super-frames (GRO, TSO) forwarded whole as GSO, or cut into segments in lvsd first.",
                    [("worker", w), ("path", path)], n)
            }
            counter(
                "lvsd_kernel_forwarded_packets_total",
                "Packets the kernel forwarded of connections lvsd handed down (--kernel-forwarding), counted each second.",
                [("worker", w)], e.kernelForwarded)
            for (family, used, capacity) in [("ipv4", e.ipv4Connections, e.ipv4Capacity), ("ipv6", e.ipv6Connections, e.ipv6Capacity)] {
                gauge(
                    "lvsd_connection_table_entries", "Connection-table entries in use (connections and templates).",
                    [("worker", w), ("family", family)], Double(used))
                gauge("lvsd_connection_table_capacity", "Connection-table entries available.", [("worker", w), ("family", family)], Double(capacity))
            }
        }
        // Connection sync: which daemons run, and what they carried.
        for role in ["master", "backup"] {
            let d = report.table.daemons.first { $0.role.rawValue == role }
            gauge(
                "lvsd_sync_daemon_running", "1 while the sync daemon of this role runs.",
                [("role", role), ("interface", d?.interface ?? ""), ("syncid", d.map { String($0.syncID) } ?? "")], d == nil ? 0 : 1)
        }
        let s = report.sync
        counter("lvsd_sync_messages_total", "Sync messages, by direction.", [("direction", "sent")], s.messagesSent)
        counter("lvsd_sync_messages_total", "Sync messages, by direction.", [("direction", "received")], s.messagesReceived)
        counter("lvsd_sync_records_total", "Connections in sync messages, by what became of them.", [("result", "sent")], s.recordsSent)
        counter("lvsd_sync_records_total", "Connections in sync messages, by what became of them.", [("result", "lost")], s.recordsLost)
        counter("lvsd_sync_records_total", "Connections in sync messages, by what became of them.", [("result", "applied")], s.recordsApplied)
        counter("lvsd_sync_records_total", "Connections in sync messages, by what became of them.", [("result", "rejected")], s.recordsRejected)
        counter("lvsd_sync_malformed_messages_total", "Received sync messages that did not decode.", [], s.malformedMessages)
        counter("lvsd_sync_send_errors_total", "Sync messages the socket refused.", [], s.sendErrors)
        // VRRP: one series per instance and state, 1 for the state it is in (keepalived_exporter's shape).
        for v in report.table.vrrp {
            let labels = [("instance", v.name), ("interface", v.interface), ("vrid", String(v.virtualRouterID))]
            for state in ["INIT", "BACKUP", "MASTER", "FAULT"] {
                gauge("lvsd_vrrp_state", "1 for the state the VRRP instance is in.", labels + [("state", state)], v.state == state ? 1 : 0)
            }
            gauge("lvsd_vrrp_priority", "The VRRP instance's configured priority.", labels, Double(v.priority))
            counter("lvsd_vrrp_transitions_total", "State changes of the VRRP instance.", labels, v.transitions)
            gauge("lvsd_vrrp_state_seconds", "Seconds the VRRP instance has been in its state.", labels, Double(v.seconds))
        }
        for b in report.table.bgp {
            gauge("lvsd_bgp_announced", "1 while the VIP is announced over BGP, 0 while it is withdrawn.", [("address", "\(b.address)")], b.announced ? 1 : 0)
        }
        gauge("lvsd_services", "Virtual services configured.", [], Double(report.table.services.count))
        gauge("lvsd_uptime_seconds", "Seconds since lvsd started.", [], Double(report.uptimeSeconds))
        return registry.emitToBuffer()
    }

    static let backendLabelNames = ["local_address", "local_port", "remote_address", "remote_port", "proto", "local_mark"]

    /// As node_exporter reads /proc/net/ip_vs: a firewall-mark service has no
    /// address, port 0, and its mark as the kernel prints it (%08X).
    static func serviceLabels(_ key: ServiceKey) -> [(String, String)] {
        switch key {
        case .address(let proto, let address, let port):
            [("local_address", address.description), ("local_port", String(port)), ("proto", proto.label), ("local_mark", "")]
        case .firewallMark(let mark, _):
            [("local_address", ""), ("local_port", "0"), ("proto", "FWM"), ("local_mark", hexMark(mark))]
        }
    }

    static func backendLabels(_ key: ServiceKey, _ server: RealServerConfiguration) -> [(String, String)] {
        let local = serviceLabels(key)
        return [local[0], local[1], ("remote_address", server.address.description), ("remote_port", String(server.port)), local[2], local[3]]
    }

    static func hexMark(_ mark: UInt32) -> String {
        let s = String(mark, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 8 - s.count)) + s
    }
}

extension TransportProtocol {
    /// As /proc/net/ip_vs names it.
    var label: String { self == .tcp ? "TCP" : self == .udp ? "UDP" : "SCTP" }
}
