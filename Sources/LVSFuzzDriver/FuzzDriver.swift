import Foundation

#if FUZZING
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
) -> CInt
#endif

/// A fuzz target's main: with libFuzzer (scripts/fuzz builds with
/// -DFUZZING) it hands control to libFuzzer's driver; without, it replays
/// the corpus files given as arguments, as the test command does.
public func runFuzzTarget(_ target: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt) -> Never {
    #if FUZZING
    var argc = CommandLine.argc
    var argv = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, target))
    #else
    var count = 0
    for path in CommandLine.arguments.dropFirst() {
        guard let data = FileManager.default.contents(atPath: path) else { continue }
        let bytes = [UInt8](data)
        // The array outlives the call; an empty one lends a non-null pointer with count 0, as libFuzzer does.
        _ = unsafe bytes.withUnsafeBufferPointer { unsafe target($0.baseAddress ?? UnsafePointer(bitPattern: 1)!, $0.count) }
        count += 1
    }
    print("replayed \(count) inputs")
    exit(0)
    #endif
}
