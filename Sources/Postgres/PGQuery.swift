import Foundation

/// One bound parameter as libpq receives it.
public enum PGBind: Sendable, Equatable {
    case null
    /// Text format; the server infers or casts the type.
    case text(String)
    /// Binary format (used for `bytea`, sent byte for byte with no escaping).
    case binary([UInt8])
}

/// A value that can be bound as a query parameter.
public protocol PGEncodable: Sendable {
    /// The parameter as libpq should send it.
    var pgBind: PGBind { get }
}

/// A SQL statement with its parameters, built by string interpolation.
///
/// Every interpolated value becomes a positional parameter (`$1`, `$2`, …) and travels apart
/// from the SQL text, so a value can never become SQL:
/// ```swift
/// let q: PGQuery = "SELECT id FROM jobs WHERE conversation_id = \(conversation) AND status = \(status)"
/// ```
/// The escape hatches say what they do: ``init(unsafeSQL:name:)`` for SQL text known at compile
/// time, and ``StringInterpolation/appendInterpolation(identifier:)`` for a quoted identifier.
public struct PGQuery: Sendable, ExpressibleByStringInterpolation, CustomStringConvertible {
    /// The SQL text with `$n` placeholders.
    public private(set) var sql: String
    /// The parameters, in placeholder order.
    public private(set) var binds: [PGBind]
    /// A name for errors, logs and metrics, e.g. `JobSQL.claim`. Never derived from the binds.
    public var name: String?
    /// Whether the connection may prepare the statement once and reuse it (on by default; off
    /// in pooler-safe mode).
    public var prepare: Bool = true

    public init(stringLiteral value: String) {
        self.sql = value
        self.binds = []
    }

    public init(stringInterpolation: StringInterpolation) {
        self.sql = stringInterpolation.sql
        self.binds = stringInterpolation.binds
    }

    /// SQL text used as it is. Only for text that is not built from user input.
    public init(unsafeSQL sql: String, name: String? = nil) {
        self.sql = sql
        self.binds = []
        self.name = name
    }

    /// The same query under a name used in errors and logs.
    public func named(_ name: String) -> PGQuery {
        var copy = self
        copy.name = name
        return copy
    }

    /// Shows the statement's name and SQL, never the values.
    public var description: String {
        "\(name ?? "query") [\(binds.count) binds]: \(sql)"
    }

    public struct StringInterpolation: StringInterpolationProtocol {
        var sql: String
        var binds: [PGBind]

        public init(literalCapacity: Int, interpolationCount: Int) {
            sql = ""
            sql.reserveCapacity(literalCapacity + interpolationCount * 3)
            binds = []
            binds.reserveCapacity(interpolationCount)
        }

        public mutating func appendLiteral(_ literal: String) {
            sql += literal
        }

        /// Binds a value as the next positional parameter.
        public mutating func appendInterpolation(_ value: some PGEncodable) {
            binds.append(value.pgBind)
            sql += "$\(binds.count)"
        }

        /// Binds an optional value; `nil` is SQL NULL.
        public mutating func appendInterpolation<T: PGEncodable>(_ value: T?) {
            binds.append(value?.pgBind ?? .null)
            sql += "$\(binds.count)"
        }

        /// Inserts a double-quoted identifier (a schema or table name). Embedded quotes are doubled,
        /// as PostgreSQL's own `quote_ident` does, so the name cannot end the identifier early.
        public mutating func appendInterpolation(identifier: String) {
            sql += PGQuery.quoteIdentifier(identifier)
        }

        /// Writes an integer into the SQL text instead of binding it, for a value the planner
        /// must see to pick a good plan that it can reuse (a `LIMIT`: bound, PostgreSQL plans
        /// for a tenth of the table and re-plans every execution). An integer cannot carry SQL.
        /// Each distinct value is its own prepared statement, so use it for small ranges.
        public mutating func appendInterpolation(literal value: Int) {
            sql += String(value)
        }

        /// Inserts another query as a part of this one: its text, its placeholders renumbered to
        /// follow this query's, its values bound after this query's. Safe as the part itself is
        /// (its values stay bound); its text must use `$` only for its placeholders.
        public mutating func appendInterpolation(fragment: PGQuery) {
            let offset = binds.count
            var text = Substring(fragment.sql)
            while let dollar = text.firstIndex(of: "$") {
                sql += text[..<dollar]
                let digits = text[text.index(after: dollar)...].prefix { $0.isASCII && $0.isNumber }
                if let n = Int(digits) {
                    sql += "$\(n + offset)"
                } else {
                    sql += "$"
                }
                text = text[text.index(after: dollar)...].dropFirst(digits.count)
            }
            sql += text
            binds += fragment.binds
        }

        /// Inserts SQL text as it is. The name says it: never pass user input.
        public mutating func appendInterpolation(unsafeSQL text: String) {
            sql += text
        }
    }

    /// Quotes an identifier for SQL text: `my"schema` becomes `"my""schema"`.
    public static func quoteIdentifier(_ name: String) -> String {
        "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}

// MARK: - Encodable values

extension String: PGEncodable {
    public var pgBind: PGBind { .text(self) }
}
extension Substring: PGEncodable {
    public var pgBind: PGBind { .text(String(self)) }
}
extension Int: PGEncodable {
    public var pgBind: PGBind { .text(String(self)) }
}
extension Int64: PGEncodable {
    public var pgBind: PGBind { .text(String(self)) }
}
extension Int32: PGEncodable {
    public var pgBind: PGBind { .text(String(self)) }
}
extension Int16: PGEncodable {
    public var pgBind: PGBind { .text(String(self)) }
}
extension Bool: PGEncodable {
    public var pgBind: PGBind { .text(self ? "t" : "f") }
}
extension Double: PGEncodable {
    public var pgBind: PGBind {
        if isNaN { return .text("NaN") }
        if isInfinite { return .text(self > 0 ? "Infinity" : "-Infinity") }
        return .text("\(self)")
    }
}
extension UUID: PGEncodable {
    public var pgBind: PGBind { .text(uuidString.lowercased()) }
}
extension Date: PGEncodable {
    public var pgBind: PGBind { .text(PGTimestamp.format(self)) }
}
extension Data: PGEncodable {
    public var pgBind: PGBind { .binary([UInt8](self)) }
}

/// Binds bytes as `bytea` (binary format).
public struct PGBytes: PGEncodable, Sendable {
    public var bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public var pgBind: PGBind { .binary(bytes) }
}

/// Binds a `Codable` value as JSON text (cast it with `::jsonb` in the SQL).
public struct PGJSON<Value: Encodable & Sendable>: PGEncodable, Sendable {
    public var value: Value
    public init(_ value: Value) { self.value = value }
    public var pgBind: PGBind {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        // Encoding a value the caller built cannot fail for the types used here; a failure
        // binds JSON null so the statement fails on the server with a clear constraint error.
        guard let data = try? encoder.encode(value), let text = String(data: data, encoding: .utf8)
        else { return .text("null") }
        return .text(text)
    }
}

/// An element type of a PostgreSQL array parameter.
public protocol PGArrayElement: PGEncodable {}
extension String: PGArrayElement {}
extension Int: PGArrayElement {}
extension Int64: PGArrayElement {}
extension Int32: PGArrayElement {}
extension Int16: PGArrayElement {}
extension Bool: PGArrayElement {}
extension Double: PGArrayElement {}
extension UUID: PGArrayElement {}
extension Date: PGArrayElement {}

/// Arrays bind as a PostgreSQL array literal (`{"a","b"}`), each element quoted and escaped,
/// so `unnest($1::uuid[])` can take thousands of values in one parameter.
extension Array: PGEncodable where Element: PGArrayElement {
    public var pgBind: PGBind { .text(PGArrayLiteral.encode(self.map { $0.pgBind })) }
}
/// `nil` binds SQL NULL.
extension Optional: PGEncodable where Wrapped: PGEncodable {
    public var pgBind: PGBind { self?.pgBind ?? .null }
}
extension Optional: PGArrayElement where Wrapped: PGArrayElement {}

enum PGArrayLiteral {
    static func encode(_ elements: [PGBind]) -> String {
        var out = "{"
        out.reserveCapacity(elements.count * 16)
        for (i, element) in elements.enumerated() {
            if i > 0 { out += "," }
            switch element {
            case .null:
                out += "NULL"
            case .text(let text):
                out += "\""
                for ch in text.unicodeScalars {
                    if ch == "\"" || ch == "\\" { out += "\\" }
                    out.unicodeScalars.append(ch)
                }
                out += "\""
            case .binary(let bytes):
                out += "\"\\\\x" + bytes.map { String(format: "%02x", $0) }.joined() + "\""
            }
        }
        out += "}"
        return out
    }

    /// Parses a one-dimensional array in PostgreSQL's text output format.
    static func decode(_ text: String) throws -> [String?] {
        var result: [String?] = []
        var scalars = text.unicodeScalars[...]
        guard scalars.first == "{", scalars.last == "}" else {
            throw PGError(.decoding, message: "not an array literal")
        }
        scalars = scalars.dropFirst().dropLast()
        if scalars.isEmpty { return [] }
        var i = scalars.startIndex
        while i <= scalars.endIndex {
            if i < scalars.endIndex, scalars[i] == "\"" {
                var value = String.UnicodeScalarView()
                i = scalars.index(after: i)
                while i < scalars.endIndex, scalars[i] != "\"" {
                    if scalars[i] == "\\" { i = scalars.index(after: i) }
                    if i < scalars.endIndex { value.append(scalars[i]); i = scalars.index(after: i) }
                }
                result.append(String(value))
                i = scalars.index(after: i)  // closing quote
            } else {
                let end = scalars[i...].firstIndex(of: ",") ?? scalars.endIndex
                let raw = String(String.UnicodeScalarView(scalars[i..<end]))
                result.append(raw == "NULL" ? nil : raw)
                i = end
            }
            if i >= scalars.endIndex { break }
            i = scalars.index(after: i)  // the comma
        }
        return result
    }
}

/// Formats and parses `timestamptz` text in the ISO style the wrapper sets on every connection
/// (`DateStyle=ISO`, `TimeZone=UTC`).
public enum PGTimestamp {
    public static func format(_ date: Date) -> String {
        let micros = (date.timeIntervalSince1970 * 1_000_000).rounded()
        let seconds = Int64((micros / 1_000_000).rounded(.down))
        let fraction = Int64(micros) - seconds * 1_000_000
        var t = time_t(seconds)
        var tm = tm()
        gmtime_r(&t, &tm)
        return String(
            format: "%04d-%02d-%02d %02d:%02d:%02d.%06lld+00", Int(tm.tm_year) + 1900, Int(tm.tm_mon) + 1,
            Int(tm.tm_mday), Int(tm.tm_hour), Int(tm.tm_min), Int(tm.tm_sec), fraction)
    }

    /// Parses `2026-12-01 08:51:54.123456+00` (offset may be `+05:30`, fraction optional).
    public static func parse(_ text: String) -> Date? {
        let u = Array(text.utf8)
        func num(_ from: Int, _ count: Int) -> Int? {
            guard from + count <= u.count else { return nil }
            var v = 0
            for k in from..<(from + count) {
                let c = u[k]
                guard c >= 48, c <= 57 else { return nil }
                v = v * 10 + Int(c - 48)
            }
            return v
        }
        if text == "infinity" { return .distantFuture }
        if text == "-infinity" { return .distantPast }
        guard u.count >= 19, let year = num(0, 4), let month = num(5, 2), let day = num(8, 2),
            let hour = num(11, 2), let minute = num(14, 2), let second = num(17, 2)
        else { return nil }
        var i = 19
        var fraction = 0.0
        if i < u.count, u[i] == UInt8(ascii: ".") {
            i += 1
            var scale = 0.1
            while i < u.count, u[i] >= 48, u[i] <= 57 {
                fraction += Double(u[i] - 48) * scale
                scale /= 10
                i += 1
            }
        }
        var offset = 0
        if i < u.count, u[i] == UInt8(ascii: "+") || u[i] == UInt8(ascii: "-") {
            let sign = u[i] == UInt8(ascii: "-") ? -1 : 1
            guard let oh = num(i + 1, 2) else { return nil }
            var om = 0
            if i + 3 < u.count, u[i + 3] == UInt8(ascii: ":"), let m = num(i + 4, 2) { om = m }
            offset = sign * (oh * 3600 + om * 60)
        }
        let days = daysFromCivil(year, month, day)
        let secs = days * 86400 + hour * 3600 + minute * 60 + second - offset
        return Date(timeIntervalSince1970: Double(secs) + fraction)
    }

    /// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
    static func daysFromCivil(_ y0: Int, _ m: Int, _ d: Int) -> Int {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146097 + doe - 719468
    }
}
