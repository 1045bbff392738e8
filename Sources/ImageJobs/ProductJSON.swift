import Foundation
import JobEngine

/// The image product's JSON, as the CLI's `--json` and the HTTP API write it: the engine's
/// values with `group_id` named `conversation_id`, keys sorted, times in ISO 8601 (UTC,
/// milliseconds).
public enum ProductJSON {
    public static func encode(_ value: some Encodable) throws -> Data {
        try encoder.encode(try self.value(value))
    }

    /// The value as product JSON, to compose into a larger document.
    public static func value(_ value: some Encodable) throws -> JSONValue {
        productNames(try JSONDecoder().decode(JSONValue.self, from: try encoder.encode(value)))
    }

    private static var encoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var c = encoder.singleValueContainer()
            try c.encode(ISO8601.format(date))
        }
        return encoder
    }

    private static func productNames(_ value: JSONValue) -> JSONValue {
        switch value {
        case .object(let o):
            return .object(Dictionary(uniqueKeysWithValues: o.map { ($0.key == "group_id" ? "conversation_id" : $0.key, productNames($0.value)) }))
        case .array(let a):
            return .array(a.map(productNames))
        default:
            return value
        }
    }
}

/// Times as the product prints them: ISO 8601, UTC, milliseconds (`2026-12-24T18:00:00.000Z`).
public enum ISO8601 {
    /// A value type, safe to share: a `DateFormatter` made per call cost a JSON response tens
    /// of microseconds per date.
    private static let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
    private static let whole = Date.ISO8601FormatStyle()

    public static func format(_ date: Date) -> String {
        style.format(date)
    }

    /// A time as ``format(_:)`` writes it (an event id a client sends back, say), or in whole
    /// seconds (`2026-12-24T18:00:00Z`, as people type it), or `nil`.
    public static func parse(_ text: String) -> Date? {
        (try? style.parse(text)) ?? (try? whole.parse(text))
    }
}
