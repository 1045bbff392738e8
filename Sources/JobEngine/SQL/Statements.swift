import Postgres

/// A namespace of statements (`JobSQL`, `MaintenanceSQL`, …), one function a statement. A
/// statement is named after the function that writes it (`JobSQL.claim`), so errors and logs
/// name it and no call site writes a name by hand.
protocol StatementCatalog {}

extension StatementCatalog {
    static func statement(_ query: PGQuery, function: String = #function) -> PGQuery {
        query.named("\(Self.self).\(function.prefix { $0 != "(" })")
    }
}
