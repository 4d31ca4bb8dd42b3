import LVSControl
import LVSFuzzDriver
import Logging

/// The control plane's parsers under arbitrary bytes: the control protocol
/// decoder and lvsd's answer to a request, ipvsadm rules files, keepalived.conf
/// the ipvsadm command line, and lvsadm trace's decoding of captured frames.
/// None may trap; errors are answers.
let plane = ControlPlane(capacity: 1024, logger: Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() }))

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzControl(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    _ = plane.handle(bytes)
    let text = String(decoding: bytes, as: UTF8.self)
    _ = try? RulesFile.parse(text, file: "fuzz")
    _ = try? KeepalivedConfiguration.parse(text, file: "fuzz")
    _ = try? AdminCommandLine.parse(text.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init))
    _ = FrameFields.describe(bytes, tunnelled: size & 1 == 1)
    return 0
}

@main
struct Replay {
    static func main() { runFuzzTarget { data, size in fuzzControl(data, size) } }
}
