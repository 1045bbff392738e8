import Foundation
import HTTPTypes
import Hummingbird
import ImageJobs
import JobEngine

/// An error answered as JSON: `{"error": message, "field": name?, "index": n?}`. Every route
/// answers its failures through this one type, so clients meet one shape.
struct APIError: Error {
    var status: HTTPResponse.Status
    var message: String
    var field: String?
    var index: Int?
    var headers: HTTPFields = [:]

    static func unauthorized() -> APIError {
        APIError(
            status: .unauthorized, message: "missing or unknown API key; send Authorization: Bearer <key> (imagejobs api-keys create)",
            headers: [.wwwAuthenticate: "Bearer"])
    }

    static func forbidden(_ scope: APIScope) -> APIError {
        APIError(status: .forbidden, message: "this API key lacks the \(scope.rawValue) scope")
    }

    static func methodNotAllowed(_ allowed: [HTTPRequest.Method]) -> APIError {
        let names = allowed.map(\.rawValue).joined(separator: ", ")
        return APIError(status: .methodNotAllowed, message: "this path answers \(names) only", headers: [.allow: names])
    }

    static func badID(_ field: String) -> APIError {
        APIError(status: .badRequest, message: "\(field) must be a UUID", field: field)
    }

    /// The queue's errors in HTTP terms: bad input 422, unknown 404, wrong state or key
    /// conflict 409, an action the server's database role may not take 403, database down 503. Other errors say only that the server failed (the log
    /// has the detail): their text could name database internals.
    static func from(_ error: any Error) -> APIError {
        if let error = error as? APIError { return error }
        if let error = error as? any HTTPResponseError, error.status == .contentTooLarge {
            return APIError(status: .contentTooLarge, message: "the request body is larger than the server accepts")
        }
        // Database errors from outside the queue (an API key's lookup) map as the queue's do.
        guard let error = JobQueueError.from(error) as? JobQueueError else {
            return APIError(status: .internalServerError, message: "the server failed to answer; its log says why")
        }
        switch error.code {
        case .invalidInput: return APIError(status: .unprocessableContent, message: error.message, field: error.field, index: error.index)
        case .notFound: return APIError(status: .notFound, message: error.message)
        case .invalidState, .duplicate: return APIError(status: .conflict, message: error.message, field: error.field)
        case .databaseUnavailable: return APIError(status: .serviceUnavailable, message: "the database is unavailable; try again shortly")
        case .notPermitted:
            return APIError(
                status: .forbidden,
                message: "the server's database role may not do this (pause and resume need the schema owner's rights, as `imagejobs pause` does)")
        default: return APIError(status: .internalServerError, message: "the server failed to answer; its log says why")
        }
    }

    var response: Response {
        var body: [String: JSONValue] = ["error": .string(message)]
        if let field { body["field"] = .string(field) }
        if let index { body["index"] = .number(Double(index)) }
        var response = (try? APIServer.json(JSONValue.object(body), status: status)) ?? Response(status: status)
        response.headers.append(contentsOf: headers)
        return response
    }
}
