namespace Drydock.Nbd;

/// <summary>How an NBD client reaches its server.</summary>
public enum NbdTransport
{
    /// <summary>TCP/IP (<c>nbd://</c>, <c>nbds://</c>).</summary>
    Tcp = 0,

    /// <summary>A Unix-domain stream socket (<c>nbd+unix://</c>, <c>nbds+unix://</c>).</summary>
    Unix = 1,
}

/// <summary>The TLS authentication method an NBD URI asks for with <c>tls-type</c>.</summary>
/// <remarks>
/// The URI only records the request; a client refuses a method it cannot perform (Drydock's client does
/// X.509 only).
/// </remarks>
public enum NbdTlsType
{
    /// <summary><c>x509</c>: certificates, verified against a certificate authority.</summary>
    X509 = 0,

    /// <summary><c>anon</c>: anonymous Diffie-Hellman, encryption without authentication.</summary>
    Anonymous = 1,

    /// <summary><c>psk</c>: pre-shared keys (see <c>tls-psk-file</c> and <c>tls-username</c>).</summary>
    Psk = 2,
}
