import Foundation
import HTTPTypes
import Hummingbird
import JobEngine

/// How the dashboard knows who is signed in. The sign-in form takes an admin key and keeps it
/// in an HttpOnly, SameSite=Strict cookie (page scripts cannot read it, other sites' pages do
/// not send it); every request checks the key as the API does, so revoking the key ends the
/// session at once. Each form carries a token derived from the key (HMAC-SHA256), which a page
/// of another origin cannot know, so a forged form post is refused even by a browser that does
/// not honour SameSite.
enum DashboardSession {
    static let cookieName = "imagejobs_session"
    /// How long a sign-in lasts: a working day.
    static let lifetime = 12 * 3600

    /// The key the request's session cookie holds, if any.
    static func key(_ request: Request) -> String? {
        request.cookies[cookieName]?.value
    }

    /// The cookie a successful sign-in sets: `Secure` when the request came over HTTPS, which
    /// the proxy in front says with `X-Forwarded-Proto` (the server itself speaks plain HTTP).
    static func cookie(key: String, request: Request) -> Cookie {
        Cookie(name: cookieName, value: key, maxAge: lifetime, path: "/", secure: isSecure(request), httpOnly: true, sameSite: .strict)
    }

    /// The cookie that ends a session.
    static func expiredCookie(request: Request) -> Cookie {
        Cookie(name: cookieName, value: "", maxAge: 0, path: "/", secure: isSecure(request), httpOnly: true, sameSite: .strict)
    }

    /// The form token of a session.
    static func formToken(key: String) -> String {
        SHA256.hex(SHA256.hmac(key: Array(key.utf8), message: Array("imagejobs dashboard form".utf8)))
    }

    /// Whether `token` is the session's form token (compared in constant time).
    static func isValid(formToken token: String, key: String) -> Bool {
        SHA256.constantTimeEqual(Array(token.utf8), Array(formToken(key: key).utf8))
    }

    private static func isSecure(_ request: Request) -> Bool {
        request.headers[.xForwardedProto]?.lowercased() == "https"
    }
}

extension HTTPField.Name {
    static let xForwardedProto = HTTPField.Name("X-Forwarded-Proto")!
}
