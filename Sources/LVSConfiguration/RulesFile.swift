import LVSCore
import LVSPacket
import LVSSystem

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A configuration file that cannot be loaded: where, and why.
public struct ConfigurationError: Error, Equatable, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int
    /// The keyword or option at fault, when there is one.
    public var keyword: String?
    public var message: String
    public init(file: String, line: Int, keyword: String? = nil, message: String) {
        self.file = file
        self.line = line
        self.keyword = keyword
        self.message = message
    }
    public var description: String {
        "\(file):\(line): " + (keyword.map { "\($0): " } ?? "") + message
    }
}

/// The files lvsd loads at start and on SIGHUP: ipvsadm rules files (the
/// `-S` format) and keepalived.conf files, applied in that order onto an
/// empty table.
public struct ConfigurationSources: Sendable {
    public var rules: [String]
    public var keepalived: [String]
    /// lvsd's marks files (`MarkRules.file`).
    public var marks: [String]
    public init(rules: [String] = [], keepalived: [String] = [], marks: [String] = []) {
        self.rules = rules
        self.keepalived = keepalived
        self.marks = marks
    }
    public var files: [String] { rules + keepalived + marks }

    /// The marks files' rules, one chain after another in the order given.
    public func loadMarks() throws(ConfigurationError) -> MarkRules {
        var out = MarkRules()
        for file in marks { out.append(try MarkRules.file(try Self.read(file), file: file)) }
        return out
    }

    public func load() throws(ConfigurationError) -> ServiceTable {
        var table = ServiceTable()
        for file in rules {
            for (line, ops) in try RulesFile.parse(try Self.read(file), file: file) {
                do { try table.apply(ops) } catch { throw ConfigurationError(file: file, line: line, message: error.message) }
            }
        }
        for file in keepalived {
            let config = try KeepalivedConfiguration.parse(try Self.read(file), file: file)
            for (line, ops) in config.operations {
                do { try table.apply(ops) } catch { throw ConfigurationError(file: file, line: line, message: error.message) }
            }
        }
        return table
    }

    static func read(_ file: String) throws(ConfigurationError) -> String {
        guard let data = FileManager.default.contents(atPath: file) else {
            throw ConfigurationError(file: file, line: 0, message: "cannot read the file")
        }
        return String(decoding: data, as: UTF8.self)
    }
}

/// An ipvsadm rules file: one command per line as `ipvsadm -S` writes them
/// (a leading `ipvsadm` is allowed), `#` comments and blank lines ignored.
public enum RulesFile {
    public static func parse(_ text: String, file: String) throws(ConfigurationError) -> [(line: Int, operations: [TableOperation])] {
        var out: [(Int, [TableOperation])] = []
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var words = raw.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" }).map(String.init)
            if let hash = words.firstIndex(where: { $0.hasPrefix("#") }) { words = Array(words[..<hash]) }
            if words.first == "ipvsadm" || words.first == "lvsadm" { words.removeFirst() }
            guard !words.isEmpty else { continue }
            let inv: Invocation
            do { inv = try AdminCommandLine.parse(words) } catch {
                throw ConfigurationError(file: file, line: n + 1, keyword: words.first, message: String(error.message.filter { $0 != "\n" }))
            }
            guard let ops = inv.operations() else {
                throw ConfigurationError(file: file, line: n + 1, keyword: words.first, message: "not a table command")
            }
            out.append((n + 1, ops))
        }
        return out
    }
}
