import Foundation
import JobEngine
import Postgres

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Delivers one webhook (a `webhook.deliver` job): POSTs the event's body to the callback URL,
/// signed with the secret of the API key that named the callback. A 2xx answer completes the
/// job; anything else is a failed attempt the queue retries with its backoff, except a host
/// the operator no longer allows, a key that is gone or a 410 Gone (final), and a 429 with
/// `Retry-After` (waits without being charged a retry). Redirects are never followed: a
/// redirect could lead to a host nobody allowed.
///
/// Headers: `ImageJobs-Event` (`job.completed`, `job.failed`, `job.cancelled`,
/// `batch.completed`), `ImageJobs-Delivery` (this job's id: the same on every retry, for
/// receivers that drop duplicates) and `ImageJobs-Signature` (``WebhookSignature``).
public struct WebhookDeliveryHandler: JobHandler {
    public let kind = Webhooks.deliveryKind
    let session: URLSession
    /// The longest a receiver may take to answer one attempt.
    let timeout: Double

    public init(timeout: Double = 10) {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.requestCachePolicy = .reloadIgnoringLocalCacheData
        configuration.httpShouldSetCookies = false
        session = URLSession(configuration: configuration, delegate: RefuseRedirects(), delegateQueue: nil)
        self.timeout = timeout
    }

    public func run(_ claimed: ClaimedJob, context: JobContext) async throws -> JobResult {
        let params = claimed.job.params
        guard let urlText = params["url"]?.stringValue, let event = params["event"]?.stringValue,
            let keyID = params["key"]?.stringValue.flatMap(UUID.init(uuidString:)), let body = params["body"]
        else { throw JobFailure.permanent("the delivery's parameters lack url, key, event or body") }
        guard let (url, host) = try? Webhooks.parseCallback(urlText, field: "url") else {
            throw JobFailure.permanent("the callback URL is not an absolute http or https URL")
        }
        let row = try await context.pool.query("""
            SELECT EXISTS (SELECT 1 FROM webhook_hosts WHERE host = \(host)) AS allowed,
                   (SELECT webhook_secret FROM api_keys WHERE id = \(keyID)) AS secret
            """)[0]
        guard try row.decode("allowed", as: Bool.self) else {
            throw JobFailure.permanent("\(host) is no longer an allowed webhook host; not sent")
        }
        guard let secret = try row.decode("secret", as: String?.self) else {
            throw JobFailure.permanent("the API key that named the callback no longer exists; not sent")
        }

        let bytes = [UInt8](try ProductJSON.encode(body))
        var request = URLRequest(url: url)
        request.httpMethod = "POST"
        request.timeoutInterval = max(1, min(timeout, claimed.remainingSeconds))
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.setValue("imagejobs-webhooks", forHTTPHeaderField: "User-Agent")
        request.setValue(event, forHTTPHeaderField: "ImageJobs-Event")
        request.setValue(claimed.job.id.lowercasedString, forHTTPHeaderField: "ImageJobs-Delivery")
        request.setValue(
            WebhookSignature.header(secret: secret, timestamp: Int(Date().timeIntervalSince1970), body: bytes),
            forHTTPHeaderField: "ImageJobs-Signature")
        request.httpBody = Data(bytes)

        let response: URLResponse
        do {
            (_, response) = try await session.data(for: request)
        } catch let error as URLError where error.code == .cancelled {
            throw CancellationError()
        } catch let error as URLError where error.code == .timedOut {
            throw JobFailure.retryable("\(host) did not answer within \(Int(request.timeoutInterval)) s")
        } catch {
            throw JobFailure.retryable("could not reach \(host): \(HTTPClient.describe(error))")
        }
        guard let status = (response as? HTTPURLResponse)?.statusCode else {
            throw JobFailure.retryable("\(host) did not answer in HTTP")
        }
        switch status {
        case 200..<300:
            return JobResult()
        case 300..<400:
            throw JobFailure.retryable("\(host) answered HTTP \(status); redirects are not followed")
        case 410:
            throw JobFailure.permanent("\(host) answered HTTP 410 Gone; not retried")
        case 429:
            if let after = HTTPClient.retryAfter((response as? HTTPURLResponse)?.value(forHTTPHeaderField: "Retry-After")) {
                throw JobFailure.rateLimited("\(host) answered HTTP 429", retryAfter: after)
            }
            throw JobFailure.retryable("\(host) answered HTTP 429")
        default:
            throw JobFailure.retryable("\(host) answered HTTP \(status)")
        }
    }
}

/// Answers every redirect with "do not follow": the 3xx response itself is the result.
private final class RefuseRedirects: NSObject, URLSessionTaskDelegate, Sendable {
    func urlSession(
        _ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
        newRequest request: URLRequest, completionHandler: @escaping (URLRequest?) -> Void
    ) {
        completionHandler(nil)
    }
}
