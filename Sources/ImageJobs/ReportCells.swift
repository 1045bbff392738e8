import Foundation
import JobEngine
import Postgres

extension Reports {
    /// A report cell as display text, for the CLI's tables and CSV and the dashboard's pages:
    /// timestamps in UTC ISO 8601, floats to three places, arrays comma-separated, NULL as "".
    public static func text(_ row: PGRow, _ i: Int) -> String {
        guard let raw = try? row.decode(i, as: String?.self) else { return "" }
        switch row.columns.types[i] {
        case PGType.timestamptz:
            return (try? row.decode(i, as: Date.self)).map(ISO8601.format) ?? raw
        case PGType.float8, PGType.float4:
            return Double(raw).map { String(format: "%.3f", $0) } ?? raw
        case 1009:
            return ((try? row.decode(i, as: [String].self)) ?? []).joined(separator: ",")
        default:
            return raw
        }
    }
}
