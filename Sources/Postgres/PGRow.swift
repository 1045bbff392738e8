import Foundation

/// PostgreSQL type OIDs the decoder checks against (`pg_type.oid`).
public enum PGType {
    public static let bool: UInt32 = 16
    public static let bytea: UInt32 = 17
    public static let name: UInt32 = 19
    public static let int8: UInt32 = 20
    public static let int2: UInt32 = 21
    public static let int4: UInt32 = 23
    public static let text: UInt32 = 25
    public static let oid: UInt32 = 26
    public static let json: UInt32 = 114
    public static let float4: UInt32 = 700
    public static let float8: UInt32 = 701
    public static let varchar: UInt32 = 1043
    public static let timestamp: UInt32 = 1114
    public static let timestamptz: UInt32 = 1184
    public static let numeric: UInt32 = 1700
    public static let uuid: UInt32 = 2950
    public static let jsonb: UInt32 = 3802

    static func name(of oid: UInt32) -> String {
        switch oid {
        case bool: return "boolean"
        case bytea: return "bytea"
        case int8: return "bigint"
        case int2: return "smallint"
        case int4: return "integer"
        case text: return "text"
        case json: return "json"
        case float4: return "real"
        case float8: return "double precision"
        case varchar: return "varchar"
        case timestamp: return "timestamp"
        case timestamptz: return "timestamptz"
        case numeric: return "numeric"
        case uuid: return "uuid"
        case jsonb: return "jsonb"
        default: return "type \(oid)"
        }
    }
}

/// The columns of a result: names and type OIDs, shared by all its rows.
public final class PGColumns: Sendable {
    public let names: [String]
    public let types: [UInt32]
    private let index: [String: Int]

    init(names: [String], types: [UInt32]) {
        self.names = names
        self.types = types
        var index: [String: Int] = [:]
        for (i, name) in names.enumerated() where index[name] == nil { index[name] = i }
        self.index = index
    }

    func position(of name: String) -> Int? { index[name] }
}

/// The rows a statement returned, decoded on the connection's thread; the `PGresult` is freed
/// before this value exists.
public struct PGRows: Sendable, RandomAccessCollection {
    public let columns: PGColumns
    let cells: [[String?]]
    /// The command tag's row count (`UPDATE 3` → 3), for statements that return no rows.
    public let affectedRows: Int

    init(columns: PGColumns, cells: [[String?]], affectedRows: Int) {
        self.columns = columns
        self.cells = cells
        self.affectedRows = affectedRows
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { cells.count }
    public subscript(position: Int) -> PGRow { PGRow(columns: columns, values: cells[position]) }

    /// The only row, or `nil` when there is none; more than one row is an error.
    public func singleRow() throws -> PGRow? {
        guard cells.count <= 1 else {
            throw PGError(.decoding, message: "expected at most one row, got \(cells.count)")
        }
        return cells.first.map { PGRow(columns: columns, values: $0) }
    }
}

/// One row of a result.
public struct PGRow: Sendable {
    public let columns: PGColumns
    let values: [String?]

    /// Decodes the named column.
    /// - Throws: ``PGError`` of kind `.decoding` naming the column when it is missing, NULL for a
    ///   non-optional type, or of another type.
    public func decode<T: PGDecodable>(_ column: String, as type: T.Type = T.self) throws -> T {
        guard let i = columns.position(of: column) else {
            throw PGError(
                .decoding, message: "no column \"\(column)\" in the result (columns: \(columns.names.joined(separator: ", ")))",
                column: column)
        }
        return try decode(i, as: type)
    }

    /// Decodes the column at `index` (0-based).
    public func decode<T: PGDecodable>(_ index: Int, as type: T.Type = T.self) throws -> T {
        guard index >= 0, index < values.count else {
            throw PGError(.decoding, message: "no column at index \(index) (the row has \(values.count))")
        }
        let name = columns.names[index]
        guard let text = values[index] else { return try T.pgNull(column: name) }
        return try T.decode(pgText: text, type: columns.types[index], column: name)
    }

    /// Decodes a `json`/`jsonb` column into a `Decodable` type.
    public func decodeJSON<T: Decodable>(_ column: String, as type: T.Type = T.self) throws -> T {
        let text: String = try decode(column)
        do {
            return try JSONDecoder().decode(T.self, from: Data(text.utf8))
        } catch {
            throw PGError(.decoding, message: "column \"\(column)\" is not valid JSON for \(T.self)", column: column)
        }
    }

    /// Whether the named column is SQL NULL.
    public func isNull(_ column: String) -> Bool {
        guard let i = columns.position(of: column) else { return true }
        return values[i] == nil
    }
}

/// A Swift type that can be read from a column's text representation.
public protocol PGDecodable: Sendable {
    /// Decodes a non-NULL value.
    static func decode(pgText: String, type: UInt32, column: String) throws -> Self
    /// The value for SQL NULL; non-optional types throw.
    static func pgNull(column: String) throws -> Self
}

extension PGDecodable {
    public static func pgNull(column: String) throws -> Self {
        throw PGError(.decoding, message: "column \"\(column)\" is NULL; decode it as \(Self.self)? to accept NULL", column: column)
    }

    static func wrongType(_ type: UInt32, _ column: String) -> PGError {
        PGError(
            .decoding, message: "column \"\(column)\" is \(PGType.name(of: type)), which does not decode as \(Self.self)",
            column: column)
    }

    static func badValue(_ column: String) -> PGError {
        PGError(.decoding, message: "column \"\(column)\" holds a value that does not decode as \(Self.self)", column: column)
    }
}

extension Optional: PGDecodable where Wrapped: PGDecodable {
    public static func decode(pgText: String, type: UInt32, column: String) throws -> Wrapped? {
        try Wrapped.decode(pgText: pgText, type: type, column: column)
    }
    public static func pgNull(column: String) throws -> Wrapped? { nil }
}

private func decodeInteger<T: FixedWidthInteger>(_ pgText: String, _ type: UInt32, _ column: String) throws -> T {
    guard type == PGType.int2 || type == PGType.int4 || type == PGType.int8 || type == PGType.oid
        || (type == PGType.numeric && !pgText.contains("."))
    else {
        throw PGError(
            .decoding, message: "column \"\(column)\" is \(PGType.name(of: type)), which does not decode as \(T.self)",
            column: column)
    }
    guard let v = T(pgText) else {
        throw PGError(.decoding, message: "column \"\(column)\" holds a value that does not decode as \(T.self)", column: column)
    }
    return v
}

extension Int: PGDecodable {
    public static func decode(pgText: String, type: UInt32, column: String) throws -> Int {
        try decodeInteger(pgText, type, column)
    }
}
extension Int64: PGDecodable {
    public static func decode(pgText: String, type: UInt32, column: String) throws -> Int64 {
        try decodeInteger(pgText, type, column)
    }
}
extension Int32: PGDecodable {
    public static func decode(pgText: String, type: UInt32, column: String) throws -> Int32 {
        try decodeInteger(pgText, type, column)
    }
}
extension Int16: PGDecodable {
    public static func decode(pgText: String, type: UInt32, column: String) throws -> Int16 {
        try decodeInteger(pgText, type, column)
    }
}
extension Bool: PGDecodable {
    public static func decode(pgText: String, type: UInt32, column: String) throws -> Bool {
        guard type == PGType.bool else { throw wrongType(type, column) }
        return pgText == "t"
    }
}
extension Double: PGDecodable {
    public static func decode(pgText: String, type: UInt32, column: String) throws -> Double {
        switch type {
        case PGType.float4, PGType.float8, PGType.numeric, PGType.int2, PGType.int4, PGType.int8:
            guard let v = Double(pgText) else { throw badValue(column) }
            return v
        default:
            throw wrongType(type, column)
        }
    }
}
extension String: PGDecodable {
    /// Any column decodes as its text representation except `bytea` (decode that as `Data`).
    public static func decode(pgText: String, type: UInt32, column: String) throws -> String {
        guard type != PGType.bytea else { throw wrongType(type, column) }
        return pgText
    }
}
extension UUID: PGDecodable {
    public static func decode(pgText: String, type: UInt32, column: String) throws -> UUID {
        guard type == PGType.uuid || type == PGType.text || type == PGType.varchar else { throw wrongType(type, column) }
        guard let v = UUID(uuidString: pgText) else { throw badValue(column) }
        return v
    }
}
extension Date: PGDecodable {
    public static func decode(pgText: String, type: UInt32, column: String) throws -> Date {
        guard type == PGType.timestamptz else { throw wrongType(type, column) }
        guard let v = PGTimestamp.parse(pgText) else { throw badValue(column) }
        return v
    }
}
extension Data: PGDecodable {
    public static func decode(pgText: String, type: UInt32, column: String) throws -> Data {
        guard type == PGType.bytea else { throw wrongType(type, column) }
        guard let bytes = PGHex.decodeBytea(pgText) else { throw badValue(column) }
        return Data(bytes)
    }
}

/// One-dimensional arrays (`text[]`, `uuid[]`, `int[]` …) decode into Swift arrays.
extension Array: PGDecodable where Element: PGDecodable {
    public static func decode(pgText: String, type: UInt32, column: String) throws -> [Element] {
        let elementType: UInt32
        switch type {
        case 1009, 1015: elementType = PGType.text
        case 2951: elementType = PGType.uuid
        case 1007: elementType = PGType.int4
        case 1016: elementType = PGType.int8
        case 1005: elementType = PGType.int2
        case 1000: elementType = PGType.bool
        case 1022: elementType = PGType.float8
        case 1185: elementType = PGType.timestamptz
        case 3807: elementType = PGType.jsonb
        default: throw wrongType(type, column)
        }
        let items: [String?]
        do { items = try PGArrayLiteral.decode(pgText) } catch { throw badValue(column) }
        return try items.map { item in
            guard let item else { return try Element.pgNull(column: column) }
            return try Element.decode(pgText: item, type: elementType, column: column)
        }
    }
}

enum PGHex {
    /// Decodes `bytea` hex output (`\x0a1b…`).
    static func decodeBytea(_ text: String) -> [UInt8]? {
        let u = text.utf8
        guard u.count >= 2, u.first == UInt8(ascii: "\\") else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity((u.count - 2) / 2)
        var iterator = u.dropFirst(2).makeIterator()
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: return c - 48
            case 97...102: return c - 87
            case 65...70: return c - 55
            default: return nil
            }
        }
        while let hi = iterator.next() {
            guard let lo = iterator.next(), let h = nibble(hi), let l = nibble(lo) else { return nil }
            out.append(h << 4 | l)
        }
        return out
    }
}
