using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace Drydock.TestKit;

/// <summary>
/// A throw-away X.509 PKI made with .NET alone (ECDSA P-256, SHA-256): a CA, a server certificate for
/// localhost / 127.0.0.1 / ::1, a client certificate, and broken variants, written as PEM in the creds
/// directory layout QEMU, nbdkit and libnbd read:
/// <list type="bullet">
/// <item><see cref="ServerDirectory"/>: ca-cert.pem, server-cert.pem, server-key.pem — for
/// <c>qemu-nbd --object tls-creds-x509,dir=…,endpoint=server</c>, QSD and <c>nbdkit --tls-certificates</c>.</item>
/// <item><see cref="ClientDirectory"/>: ca-cert.pem, client-cert.pem, client-key.pem — for libnbd's
/// <c>tls-certificates=</c> and QEMU's <c>endpoint=client</c>.</item>
/// <item><see cref="CombinedDirectory"/>: all five files.</item>
/// <item><see cref="ExpiredServerDirectory"/>: a server certificate that expired yesterday (QEMU refuses to
/// start with it; nbdkit serves it, so clients can be tested).</item>
/// <item><see cref="UnknownCaServerDirectory"/>: a server certificate from another CA; its ca-cert.pem holds
/// both CAs, so the server itself starts and still accepts our client certificate.</item>
/// <item><see cref="WrongHostnameServerDirectory"/>: a server certificate for <see cref="WrongHostname"/> only.</item>
/// <item><see cref="UntrustedClientDirectory"/>: our CA, with a client certificate from the other CA.</item>
/// </list>
/// Usable as an xunit collection fixture (public parameterless constructor, disposable).
/// </summary>
public sealed class TestPki : IDisposable
{
    /// <summary>The only name in the wrong-hostname server certificate.</summary>
    public const string WrongHostname = "wrong.invalid";

    private const string ServerAuthOid = "1.3.6.1.5.5.7.3.1";
    private const string ClientAuthOid = "1.3.6.1.5.5.7.3.2";

    private readonly TestDirectory? _ownedDirectory;
    private readonly List<X509Certificate2> _certificates = [];
    private long _serial;

    /// <summary>Creates a PKI in a new temporary directory; certificates are valid from an hour ago for a week.</summary>
    public TestPki()
        : this(TestDirectory.Create("pki"), TimeProvider.System)
    {
    }

    private TestPki(TestDirectory directory, TimeProvider timeProvider)
        : this(directory.Path, timeProvider)
    {
        _ownedDirectory = directory;
    }

    private TestPki(string directory, TimeProvider timeProvider)
    {
        RootDirectory = directory;
        var now = timeProvider.GetUtcNow();
        var notBefore = now.AddHours(-1);
        var notAfter = now.AddDays(7);

        // The CAs predate the expired certificate they sign.
        CaCertificate = CreateCa("Drydock Test CA", now.AddDays(-60), notAfter);
        var otherCa = CreateCa("Drydock Unknown CA", now.AddDays(-60), notAfter);
        OtherCaCertificate = otherCa;

        ServerCertificate = CreateLeaf("localhost", CaCertificate, notBefore, notAfter, server: true, ["localhost"], [IPAddress.Loopback, IPAddress.IPv6Loopback]);
        ClientCertificate = CreateLeaf("drydock-client", CaCertificate, notBefore, notAfter, server: false, [], []);
        var expired = CreateLeaf("localhost", CaCertificate, now.AddDays(-30), now.AddDays(-1), server: true, ["localhost"], [IPAddress.Loopback, IPAddress.IPv6Loopback]);
        var unknownCa = CreateLeaf("localhost", otherCa, notBefore, notAfter, server: true, ["localhost"], [IPAddress.Loopback, IPAddress.IPv6Loopback]);
        var wrongHost = CreateLeaf(WrongHostname, CaCertificate, notBefore, notAfter, server: true, [WrongHostname], []);
        var untrustedClient = CreateLeaf("drydock-client", otherCa, notBefore, notAfter, server: false, [], []);

        var caPem = CaCertificate.ExportCertificatePem();
        var bothCasPem = caPem + "\n" + otherCa.ExportCertificatePem();

        ServerDirectory = WriteDirectory("server", caPem, ("server", ServerCertificate));
        ClientDirectory = WriteDirectory("client", caPem, ("client", ClientCertificate));
        CombinedDirectory = WriteDirectory("combined", caPem, ("server", ServerCertificate), ("client", ClientCertificate));
        ExpiredServerDirectory = WriteDirectory("expired-server", caPem, ("server", expired));
        UnknownCaServerDirectory = WriteDirectory("unknown-ca-server", bothCasPem, ("server", unknownCa));
        WrongHostnameServerDirectory = WriteDirectory("wrong-hostname-server", caPem, ("server", wrongHost));
        UntrustedClientDirectory = WriteDirectory("untrusted-client", caPem, ("client", untrustedClient));
    }

    /// <summary>The directory holding all the creds directories.</summary>
    public string RootDirectory { get; }

    /// <summary>ca-cert.pem, server-cert.pem, server-key.pem.</summary>
    public string ServerDirectory { get; }

    /// <summary>ca-cert.pem, client-cert.pem, client-key.pem.</summary>
    public string ClientDirectory { get; }

    /// <summary>All five files.</summary>
    public string CombinedDirectory { get; }

    /// <summary>A server certificate (from our CA) that expired a day ago.</summary>
    public string ExpiredServerDirectory { get; }

    /// <summary>A server certificate from a CA clients do not trust; ca-cert.pem holds both CAs.</summary>
    public string UnknownCaServerDirectory { get; }

    /// <summary>A server certificate (from our CA) for <see cref="WrongHostname"/> only.</summary>
    public string WrongHostnameServerDirectory { get; }

    /// <summary>Our CA, with a client certificate from the other CA (for testing a server that verifies clients).</summary>
    public string UntrustedClientDirectory { get; }

    /// <summary>The CA certificate (public part), for a .NET client's custom trust store.</summary>
    public X509Certificate2 CaCertificate { get; }

    /// <summary>The CA that clients do not trust.</summary>
    public X509Certificate2 OtherCaCertificate { get; }

    /// <summary>The server certificate, with its private key.</summary>
    public X509Certificate2 ServerCertificate { get; }

    /// <summary>The client certificate, with its private key (for SslStream client authentication).</summary>
    public X509Certificate2 ClientCertificate { get; }

    /// <summary>Creates a PKI in <paramref name="directory"/> (which the caller owns) at the time <paramref name="timeProvider"/> gives.</summary>
    public static TestPki Create(string directory, TimeProvider? timeProvider = null) => new(directory, timeProvider ?? TimeProvider.System);

    /// <summary>Disposes the certificates and deletes the directory if the PKI created it.</summary>
    public void Dispose()
    {
        foreach (var certificate in _certificates)
        {
            certificate.Dispose();
        }

        _ownedDirectory?.Dispose();
    }

    private X509Certificate2 Track(X509Certificate2 certificate)
    {
        _certificates.Add(certificate);
        return certificate;
    }

    private byte[] NextSerial()
    {
        var serial = new byte[9];
        RandomNumberGenerator.Fill(serial.AsSpan(1, 4));
        BitConverter.TryWriteBytes(serial.AsSpan(5), (int)Interlocked.Increment(ref _serial));
        serial[0] = 0x01; // positive, non-zero leading byte
        return serial;
    }

    private X509Certificate2 CreateCa(string commonName, DateTimeOffset notBefore, DateTimeOffset notAfter)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(new X500DistinguishedName("CN=" + commonName + ",O=Drydock"), key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(certificateAuthority: true, hasPathLengthConstraint: true, pathLengthConstraint: 0, critical: true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, critical: true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, critical: false));
        return Track(request.CreateSelfSigned(notBefore, notAfter));
    }

    private X509Certificate2 CreateLeaf(
        string commonName,
        X509Certificate2 issuer,
        DateTimeOffset notBefore,
        DateTimeOffset notAfter,
        bool server,
        IReadOnlyList<string> dnsNames,
        IReadOnlyList<IPAddress> addresses)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(new X500DistinguishedName("CN=" + commonName + ",O=Drydock"), key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(certificateAuthority: false, hasPathLengthConstraint: false, pathLengthConstraint: 0, critical: true));
        // QEMU's creds check wants both bits on every leaf certificate, whatever the key type.
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature | X509KeyUsageFlags.KeyEncipherment, critical: true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid(server ? ServerAuthOid : ClientAuthOid)], critical: false));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, critical: false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(issuer, includeKeyIdentifier: true, includeIssuerAndSerial: false));
        if (dnsNames.Count > 0 || addresses.Count > 0)
        {
            var names = new SubjectAlternativeNameBuilder();
            foreach (var name in dnsNames)
            {
                names.AddDnsName(name);
            }

            foreach (var address in addresses)
            {
                names.AddIpAddress(address);
            }

            request.CertificateExtensions.Add(names.Build());
        }

        using var signed = request.Create(issuer, notBefore, notAfter, NextSerial());
        return Track(signed.CopyWithPrivateKey(key));
    }

    private string WriteDirectory(string name, string caPem, params (string Role, X509Certificate2 Certificate)[] leaves)
    {
        var directory = Path.Combine(RootDirectory, name);
        Directory.CreateDirectory(directory);
        File.WriteAllText(Path.Combine(directory, "ca-cert.pem"), caPem, Encoding.ASCII);
        foreach (var (role, certificate) in leaves)
        {
            File.WriteAllText(Path.Combine(directory, role + "-cert.pem"), certificate.ExportCertificatePem(), Encoding.ASCII);
            var keyPath = Path.Combine(directory, role + "-key.pem");
            using var key = certificate.GetECDsaPrivateKey() ?? throw new InvalidOperationException("The certificate lost its private key.");
            File.WriteAllText(keyPath, key.ExportPkcs8PrivateKeyPem(), Encoding.ASCII);
            if (!OperatingSystem.IsWindows())
            {
                File.SetUnixFileMode(keyPath, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            }
        }

        return directory;
    }
}
