import LVSFuzzDriver

@main
struct Replay {
    static func main() { runFuzzTarget { data, size in fuzzDirector(data, size) } }
}
