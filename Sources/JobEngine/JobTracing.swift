import Foundation
import Tracing

/// A job's trace context (`jobs.trace_context`): what the submitter's tracer injects, carried
/// with the job so that the span of its run joins the trace of the request that enqueued it.
enum JobTraceContext {
    /// The current context as the tracer injects it, as a JSON object; `nil` when it injects
    /// nothing (no tracing set up), so a job without tracing stores NULL.
    static func current(_ tracer: any Tracer) -> String? {
        guard let context = ServiceContext.current else { return nil }
        var carrier: [String: String] = [:]
        tracer.inject(context, into: &carrier, using: Carrier())
        return carrier.isEmpty ? nil : JSONValue.object(carrier.mapValues { .string($0) }).jsonText
    }

    /// The context a job's stored trace context describes (the top level when it has none).
    static func context(_ stored: String?, tracer: any Tracer) -> ServiceContext {
        var context = ServiceContext.topLevel
        guard let stored, case .object(let object)? = try? JSONValue.parse(stored) else { return context }
        tracer.extract(object.compactMapValues(\.stringValue), into: &context, using: Carrier())
        return context
    }

    private struct Carrier: Injector, Extractor {
        func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) { carrier[key] = value }
        func extract(key: String, from carrier: [String: String]) -> String? { carrier[key] }
    }
}
