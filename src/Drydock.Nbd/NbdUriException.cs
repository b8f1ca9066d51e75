namespace Drydock.Nbd;

/// <summary>The part of an NBD URI that an <see cref="NbdUriException"/> is about.</summary>
public enum NbdUriComponent
{
    /// <summary>The URI as a whole (empty, or not shaped like a URI at all).</summary>
    Uri = 0,

    /// <summary>The scheme (<c>nbd</c>, <c>nbds</c>, <c>nbd+unix</c>, <c>nbds+unix</c>).</summary>
    Scheme = 1,

    /// <summary>The authority (<c>//userinfo@host:port</c>) as a whole.</summary>
    Authority = 2,

    /// <summary>The userinfo (user name) inside the authority.</summary>
    UserInfo = 3,

    /// <summary>The host inside the authority.</summary>
    Host = 4,

    /// <summary>The port inside the authority.</summary>
    Port = 5,

    /// <summary>The path, which carries the export name.</summary>
    ExportName = 6,

    /// <summary>The query string or one of its parameters.</summary>
    Query = 7,

    /// <summary>The <c>socket</c> query parameter of a Unix-domain URI.</summary>
    Socket = 8,

    /// <summary>One of the <c>tls-*</c> query parameters.</summary>
    Tls = 9,

    /// <summary>A fragment (<c>#...</c>), which NBD URIs do not have.</summary>
    Fragment = 10,
}

/// <summary>
/// An NBD URI that does not follow the NBD URI specification (NetworkBlockDevice/nbd doc/uri.md) or
/// RFC 3986. The message names the offending part; <see cref="Component"/> says which part it is.
/// </summary>
public sealed class NbdUriException : FormatException
{
    /// <summary>Creates the exception for a problem in <paramref name="component"/>.</summary>
    /// <param name="component">The part of the URI at fault.</param>
    /// <param name="message">What is wrong, naming the offending text.</param>
    public NbdUriException(NbdUriComponent component, string message)
        : base(message)
    {
        Component = component;
    }

    /// <summary>The part of the URI at fault.</summary>
    public NbdUriComponent Component { get; }
}
