using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Drydock.Nbd.Tests.TestSupport;

/// <summary>
/// A private PKI made in the test: a CA, a server certificate for localhost/127.0.0.1, a client certificate,
/// an expired server certificate, and a second CA with its own server certificate (for "wrong CA").
/// ECDSA P-256 keys: quick to generate.
/// </summary>
public sealed class TestCertificates : IDisposable
{
    private TestCertificates()
    {
        var now = TimeProvider.System.GetUtcNow();
        Ca = CreateCa("CN=Drydock test CA", now);
        OtherCa = CreateCa("CN=Some other CA", now);
        Server = Issue(Ca, "CN=localhost", now.AddDays(-1), now.AddDays(30), server: true);
        Client = Issue(Ca, "CN=drydock-client", now.AddDays(-1), now.AddDays(30), server: false);
        ExpiredServer = Issue(Ca, "CN=localhost", now.AddDays(-30), now.AddDays(-1), server: true);
        ServerFromOtherCa = Issue(OtherCa, "CN=localhost", now.AddDays(-1), now.AddDays(30), server: true);
    }

    public X509Certificate2 Ca { get; }

    public X509Certificate2 OtherCa { get; }

    public X509Certificate2 Server { get; }

    public X509Certificate2 Client { get; }

    public X509Certificate2 ExpiredServer { get; }

    public X509Certificate2 ServerFromOtherCa { get; }

    public X509Certificate2Collection Trust => [Ca];

    public static TestCertificates Create() => new();

    public void Dispose()
    {
        Ca.Dispose();
        OtherCa.Dispose();
        Server.Dispose();
        Client.Dispose();
        ExpiredServer.Dispose();
        ServerFromOtherCa.Dispose();
    }

    private static X509Certificate2 CreateCa(string subject, DateTimeOffset now)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(certificateAuthority: true, hasPathLengthConstraint: false, pathLengthConstraint: 0, critical: true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, critical: true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, critical: false));
        return request.CreateSelfSigned(now.AddDays(-60), now.AddYears(1));
    }

    private static X509Certificate2 Issue(X509Certificate2 ca, string subject, DateTimeOffset notBefore, DateTimeOffset notAfter, bool server)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, critical: true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, critical: true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(
            [new Oid(server ? "1.3.6.1.5.5.7.3.1" : "1.3.6.1.5.5.7.3.2")], critical: false));
        if (server)
        {
            var names = new SubjectAlternativeNameBuilder();
            names.AddDnsName("localhost");
            names.AddIpAddress(IPAddress.Loopback);
            request.CertificateExtensions.Add(names.Build());
        }

        var serial = RandomNumberGenerator.GetBytes(12);
        serial[0] &= 0x7F;
        using var issued = request.Create(ca, notBefore, notAfter, serial);
        using var withKey = issued.CopyWithPrivateKey(key);

        // A round trip through PKCS#12 gives a certificate whose key SslStream can use on every platform.
        return X509CertificateLoader.LoadPkcs12(withKey.Export(X509ContentType.Pkcs12), password: null);
    }
}
