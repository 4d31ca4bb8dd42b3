import LVSAdmin
import LVSConfiguration
import LVSControlProtocol
import LVSDaemon
import LVSFuzzDriver
import LVSPacket
import LVSVRRP
import Logging

/// The control plane's parsers under arbitrary bytes: the control protocol
/// decoder and lvsd's answer to a request, ipvsadm rules files, keepalived.conf
/// the ipvsadm command line, lvsadm trace's decoding of captured frames, and
/// what arrives from the network outside the data path: sync messages (applied
/// to an engine) and VRRP advertisements.
/// None may trap; errors are answers.
let plane: ControlPlane = {
    let p = ControlPlane(capacity: 1024, logger: Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() }))
    // Services for sync records to land on: NAT, FULLNAT, DR with persistence.
    let rules = """
        -A -t 198.18.0.10:80 -s rr
        -a -t 198.18.0.10:80 -r 198.19.0.2:8080 -m
        -A -t 198.18.0.10:81 -s rr
        -a -t 198.18.0.10:81 -r 198.19.0.2:8080 -b
        --add-laddr -t 198.18.0.10:81 -z 198.19.0.100
        -A -u 198.18.0.10:53 -s sh -p 60
        -a -u 198.18.0.10:53 -r 198.19.0.3:53 -g
        """
    try? p.apply((try? RulesFile.parse(rules, file: "fuzz"))?.flatMap(\.operations) ?? [])
    return p
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzControl(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    // libFuzzer lends `size` readable bytes at `data` for the call; they are copied at once.
    let bytes = unsafe Array(UnsafeBufferPointer(start: data, count: size))
    _ = plane.handle(bytes)
    let text = String(decoding: bytes, as: UTF8.self)
    _ = try? RulesFile.parse(text, file: "fuzz")
    _ = try? MarkRules.file(text, file: "fuzz")
    _ = MarkRules.nftables(text)
    if let k = try? KeepalivedConfiguration.parse(text, file: "fuzz") {
        _ = try? HighAvailabilityConfiguration.parse(k, file: "fuzz")
        _ = try? k.healthTargets(file: "fuzz")
    }
    if let (_, records, _) = try? SyncProtocol.decode(bytes) {
        plane.engines[0].director.withLock { d in for r in records { _ = d.applySync(r, now: 1000) } }
    }
    _ = try? VRRPAdvertisement.decode(bytes)
    _ = try? VRRPAuthenticationHeader.open(bytes, key: Array(bytes.prefix(8)), unicast: size & 1 == 1)
    _ = try? VRRPAdvertisement.decode6(bytes, source: IPv6Address(high: 0xFE80_0000_0000_0000, low: 1), hopLimit: 255)
    _ = try? AdminCommandLine.parse(text.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init))
    _ = FrameFields.describe(bytes, tunnelled: size & 1 == 1)
    _ = FleetComparison.differences(here: text, there: String(text.reversed()))
    return 0
}

@main
struct Replay {
    // The driver lends each input as a pointer and a count, readable for the call.
    static func main() { unsafe runFuzzTarget { data, size in unsafe fuzzControl(data, size) } }
}
