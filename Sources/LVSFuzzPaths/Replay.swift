import LVSFuzzDriver

@main
struct Replay {
    // The driver lends each input as a pointer and a count, readable for the call.
    static func main() { unsafe runFuzzTarget { data, size in unsafe fuzzPaths(data, size) } }
}
