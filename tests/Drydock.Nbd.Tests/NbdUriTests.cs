using System.Text;
using FsCheck;
using FsCheck.Fluent;
using Xunit;

namespace Drydock.Nbd.Tests;

public sealed class NbdUriTests
{
    // The export-name table of the NBD URI specification (doc/uri.md, "NBD URI export name").
    [Theory]
    [InlineData("nbd://example.com/disk", "disk")]
    [InlineData("nbd+unix:///disk?socket=sock", "disk")]
    [InlineData("nbd://example.com/", "")]
    [InlineData("nbd://example.com", "")]
    [InlineData("nbd://example.com//disk", "/disk")]
    [InlineData("nbd://example.com/hello%20world", "hello world")]
    public void Export_name_follows_the_specification_table(string uri, string exportName)
    {
        Assert.Equal(exportName, NbdUri.Parse(uri).ExportName);
    }

    [Theory]
    [InlineData("nbd://example.com/x", "nbd", NbdTransport.Tcp, false)]
    [InlineData("nbds://example.com/x", "nbds", NbdTransport.Tcp, true)]
    [InlineData("nbd+unix:///x?socket=/s", "nbd+unix", NbdTransport.Unix, false)]
    [InlineData("nbds+unix:///x?socket=/s", "nbds+unix", NbdTransport.Unix, true)]
    [InlineData("NBDS+Unix:///x?socket=/s", "nbds+unix", NbdTransport.Unix, true)]
    public void Scheme_selects_transport_and_whether_TLS_is_required(string uri, string scheme, NbdTransport transport, bool tls)
    {
        var parsed = NbdUri.Parse(uri);

        Assert.Equal(scheme, parsed.Scheme);
        Assert.Equal(transport, parsed.Transport);
        Assert.Equal(tls, parsed.TlsRequired);
    }

    [Fact]
    public void Tcp_uri_without_port_uses_the_IANA_port()
    {
        var uri = NbdUri.Parse("nbd://example.com/disk");

        Assert.Equal("example.com", uri.Host);
        Assert.Equal(10809, uri.Port);
        Assert.Null(uri.SocketPath);
    }

    [Theory]
    [InlineData("nbd://example.com:10810/disk", 10810)]
    [InlineData("nbd://example.com:1/", 1)]
    [InlineData("nbd://example.com:65535", 65535)]
    [InlineData("nbd://example.com:/disk", 10809)]
    [InlineData("nbd://example.com:000080/", 80)]
    public void Port_is_parsed_in_range(string uri, int port)
    {
        Assert.Equal(port, NbdUri.Parse(uri).Port);
    }

    [Theory]
    [InlineData("nbd://[::1]/disk", "::1", 10809)]
    [InlineData("nbd://[::1]:10811/disk", "::1", 10811)]
    [InlineData("nbd://[2001:DB8::7]:2000", "2001:db8::7", 2000)]
    [InlineData("nbd://[fe80::1%25eth0]/", "fe80::1%eth0", 10809)]
    [InlineData("nbd://[::ffff:192.0.2.1]/", "::ffff:192.0.2.1", 10809)]
    public void Ipv6_literal_is_stored_without_brackets(string uri, string host, int port)
    {
        var parsed = NbdUri.Parse(uri);

        Assert.Equal(host, parsed.Host);
        Assert.Equal(port, parsed.Port);
    }

    [Theory]
    [InlineData("nbd://192.0.2.7/", "192.0.2.7")]
    [InlineData("nbd://Example.COM/", "example.com")]
    [InlineData("nbd://host%2Dname/", "host-name")]
    public void Host_is_decoded_and_lower_cased(string uri, string host)
    {
        Assert.Equal(host, NbdUri.Parse(uri).Host);
    }

    [Fact]
    public void Unix_uri_reads_socket_and_user_name_like_the_libnbd_example()
    {
        var uri = NbdUri.Parse("nbds+unix://alice@/?socket=/tmp/nbd.sock&tls-certificates=certs");

        Assert.Equal(NbdTransport.Unix, uri.Transport);
        Assert.True(uri.TlsRequired);
        Assert.Equal("alice", uri.UserName);
        Assert.Null(uri.Host);
        Assert.Equal("/tmp/nbd.sock", uri.SocketPath);
        Assert.Equal("certs", uri.TlsCertificates);
        Assert.Equal(string.Empty, uri.ExportName);
    }

    [Fact]
    public void Relative_socket_path_is_kept_as_written()
    {
        Assert.Equal("nbd.sock", NbdUri.Parse("nbd+unix:///export?socket=nbd.sock").SocketPath);
    }

    [Fact]
    public void Percent_encoding_is_decoded_as_utf8_everywhere()
    {
        var uri = NbdUri.Parse("nbd+unix://b%C3%B6b@/caf%C3%A9%2Fdisk%3F1?socket=/run/my%20dir/a%26b.sock&tls-hostname=h%C3%B6st");

        Assert.Equal("böb", uri.UserName);
        Assert.Equal("café/disk?1", uri.ExportName);
        Assert.Equal("/run/my dir/a&b.sock", uri.SocketPath);
        Assert.Equal("höst", uri.TlsHostname);
    }

    [Fact]
    public void Plus_is_a_literal_character_not_a_space()
    {
        // RFC 3986 has no form encoding: '+' stays '+'.
        var uri = NbdUri.Parse("nbd+unix:///a+b?socket=/tmp/c+d");

        Assert.Equal("a+b", uri.ExportName);
        Assert.Equal("/tmp/c+d", uri.SocketPath);
    }

    [Fact]
    public void Abstract_socket_is_supported_with_a_leading_nul()
    {
        var uri = NbdUri.Parse("nbd+unix:///?socket=%00/abstract");

        Assert.Equal("\0/abstract", uri.SocketPath);
        Assert.True(uri.IsAbstractSocket);
        Assert.Equal("nbd+unix:///?socket=%00/abstract", uri.ToString());
    }

    [Fact]
    public void All_tls_parameters_are_parsed()
    {
        var uri = NbdUri.Parse(
            "nbds://bob@server.example:10900/disk?tls-type=psk&tls-hostname=other.example&tls-verify-peer=0"
            + "&tls-certificates=/etc/pki/nbd&tls-psk-file=/etc/nbd.psk&tls-username=carol");

        Assert.Equal(NbdTlsType.Psk, uri.TlsType);
        Assert.Equal("other.example", uri.TlsHostname);
        Assert.False(uri.TlsVerifyPeer);
        Assert.Equal("/etc/pki/nbd", uri.TlsCertificates);
        Assert.Equal("/etc/nbd.psk", uri.TlsPskFile);
        Assert.Equal("carol", uri.TlsUsername);
        Assert.Equal("bob", uri.UserName);
    }

    [Theory]
    [InlineData("x509", NbdTlsType.X509)]
    [InlineData("anon", NbdTlsType.Anonymous)]
    [InlineData("psk", NbdTlsType.Psk)]
    public void Tls_type_values_are_recognised(string value, NbdTlsType type)
    {
        Assert.Equal(type, NbdUri.Parse("nbds://h/?tls-type=" + value).TlsType);
    }

    [Fact]
    public void Tls_defaults_verify_the_peer_and_name_no_type()
    {
        var uri = NbdUri.Parse("nbds://h/");

        Assert.True(uri.TlsVerifyPeer);
        Assert.Null(uri.TlsType);
        Assert.Null(uri.TlsCertificates);
        Assert.True(NbdUri.Parse("nbds://h/?tls-verify-peer=1").TlsVerifyPeer);
    }

    [Fact]
    public void Tls_parameters_on_a_plain_scheme_are_kept_but_do_not_require_tls()
    {
        // The specification allows opportunistic TLS on nbd:// and nbd+unix://.
        var uri = NbdUri.Parse("nbd+unix:///d?socket=/s&tls-certificates=/pki&tls-type=x509");

        Assert.False(uri.TlsRequired);
        Assert.Equal("/pki", uri.TlsCertificates);
        Assert.Equal(NbdTlsType.X509, uri.TlsType);
    }

    [Fact]
    public void Experimental_parameters_are_kept_in_order()
    {
        var uri = NbdUri.Parse("nbd://h/d?x-b=2&x-a=&x-c=%26");

        Assert.Equal(
            [new("x-b", "2"), new("x-a", ""), new("x-c", "&")],
            uri.ExperimentalParameters);
        Assert.Equal("nbd://h/d?x-b=2&x-a=&x-c=%26", uri.ToString());
    }

    [Fact]
    public void Empty_query_segments_are_ignored()
    {
        var uri = NbdUri.Parse("nbd+unix:///d?&socket=/s&&");

        Assert.Equal("/s", uri.SocketPath);
    }

    [Fact]
    public void Export_name_of_exactly_4096_utf8_bytes_is_accepted()
    {
        var name = new string('é', 2048);

        Assert.Equal(name, NbdUri.Parse("nbd://h/" + Uri.EscapeDataString(name)).ExportName);
    }

    [Theory]
    [InlineData("", NbdUriComponent.Uri, "empty")]
    [InlineData("example.com/disk", NbdUriComponent.Scheme, "no scheme")]
    [InlineData(":foo", NbdUriComponent.Scheme, "no scheme")]
    [InlineData("http://example.com/", NbdUriComponent.Scheme, "'http'")]
    [InlineData("1nbd://example.com/", NbdUriComponent.Scheme, "'1nbd'")]
    [InlineData("nb_d://example.com/", NbdUriComponent.Scheme, "'nb_d'")]
    [InlineData("nbd+vsock:///", NbdUriComponent.Scheme, "not supported")]
    [InlineData("nbds+vsock://2:10809/", NbdUriComponent.Scheme, "AF_VSOCK")]
    [InlineData("nbd:disk", NbdUriComponent.Authority, "'//'")]
    [InlineData("nbd:/disk", NbdUriComponent.Authority, "'//'")]
    [InlineData("nbd:///disk", NbdUriComponent.Host, "needs a host")]
    [InlineData("nbd://alice@/disk", NbdUriComponent.Host, "needs a host")]
    [InlineData("nbd://h:0/", NbdUriComponent.Port, "out of range")]
    [InlineData("nbd://h:65536/", NbdUriComponent.Port, "out of range")]
    [InlineData("nbd://h:99999999999999/", NbdUriComponent.Port, "out of range")]
    [InlineData("nbd://h:abc/", NbdUriComponent.Port, "'abc'")]
    [InlineData("nbd://h:-1/", NbdUriComponent.Port, "'-1'")]
    [InlineData("nbd://h:1:2/", NbdUriComponent.Port, "'1:2'")]
    [InlineData("nbd://h/disk#frag", NbdUriComponent.Fragment, "#frag")]
    [InlineData("nbd://h/disk?socket=x#", NbdUriComponent.Fragment, "fragment")]
    [InlineData("nbd://[::1/", NbdUriComponent.Host, "closing")]
    [InlineData("nbd://[zz::1]/", NbdUriComponent.Host, "not a valid IPv6")]
    [InlineData("nbd://[192.0.2.1]/", NbdUriComponent.Host, "not a valid IPv6")]
    [InlineData("nbd://[v1.fe]/", NbdUriComponent.Host, "IPvFuture")]
    [InlineData("nbd://[::1]x/", NbdUriComponent.Authority, "'x'")]
    [InlineData("nbd://[fe80::1%eth0]/", NbdUriComponent.Host, "%25")]
    [InlineData("nbd://[fe80::1%25]/", NbdUriComponent.Host, "zone")]
    [InlineData("nbd://ex ample/", NbdUriComponent.Host, "U+0020")]
    [InlineData("nbd://h%2Fx/", NbdUriComponent.Host, "'/'")]
    [InlineData("nbd://h%3Ax/", NbdUriComponent.Host, "':'")]
    [InlineData("nbd://h/a b", NbdUriComponent.ExportName, "U+0020")]
    [InlineData("nbd://h/caf\u00e9", NbdUriComponent.ExportName, "percent-encoded")]
    [InlineData("nbd://h/a[1]", NbdUriComponent.ExportName, "'['")]
    [InlineData("nbd://h/%zz", NbdUriComponent.ExportName, "'%zz'")]
    [InlineData("nbd://h/a%4", NbdUriComponent.ExportName, "'%4'")]
    [InlineData("nbd://h/%00", NbdUriComponent.ExportName, "NUL")]
    [InlineData("nbd://h/%FF%FE", NbdUriComponent.ExportName, "UTF-8")]
    [InlineData("nbd://h/%C3", NbdUriComponent.ExportName, "UTF-8")]
    [InlineData("nbd+unix:///disk", NbdUriComponent.Socket, "needs a socket")]
    [InlineData("nbd+unix:///disk?tls-type=x509", NbdUriComponent.Socket, "needs a socket")]
    [InlineData("nbd+unix:///?socket=", NbdUriComponent.Socket, "empty")]
    [InlineData("nbd+unix:///?socket=/a%00b", NbdUriComponent.Socket, "NUL")]
    [InlineData("nbd+unix:///?socket=%00", NbdUriComponent.Socket, "abstract")]
    [InlineData("nbd+unix:///?socket=/a%zz", NbdUriComponent.Socket, "'%zz'")]
    [InlineData("nbd+unix:///?socket=/a b", NbdUriComponent.Socket, "U+0020")]
    [InlineData("nbd+unix://localhost/?socket=/s", NbdUriComponent.Authority, "no host or port")]
    [InlineData("nbd+unix://:10809/?socket=/s", NbdUriComponent.Authority, "no host or port")]
    [InlineData("nbd://h/?socket=/s", NbdUriComponent.Socket, "only valid")]
    [InlineData("nbd://h/?foo=1", NbdUriComponent.Query, "unknown query parameter 'foo'")]
    [InlineData("nbd://h/?Socket=1", NbdUriComponent.Query, "unknown query parameter 'Socket'")]
    [InlineData("nbd://h/?tls-type=x509&tls-type=x509", NbdUriComponent.Query, "more than once")]
    [InlineData("nbd+unix:///?socket=/a&socket=/b", NbdUriComponent.Query, "'socket' appears more than once")]
    [InlineData("nbd://h/?x-a=1&x-a=2", NbdUriComponent.Query, "more than once")]
    [InlineData("nbd://h/?tls-verify-peer", NbdUriComponent.Query, "no value")]
    [InlineData("nbd://h/?=1", NbdUriComponent.Query, "empty name")]
    [InlineData("nbd://h/?tls-verify-peer=yes", NbdUriComponent.Tls, "'yes'")]
    [InlineData("nbd://h/?tls-verify-peer=", NbdUriComponent.Tls, "0 or 1")]
    [InlineData("nbd://h/?tls-type=kerberos", NbdUriComponent.Tls, "'kerberos'")]
    [InlineData("nbd://h/?tls-type=X509", NbdUriComponent.Tls, "'X509'")]
    [InlineData("nbd://h/?tls-certificates=", NbdUriComponent.Tls, "empty")]
    [InlineData("nbd://h/?tls-hostname=a%00b", NbdUriComponent.Tls, "NUL")]
    [InlineData("nbd://h/?tls-psk-file=", NbdUriComponent.Tls, "'tls-psk-file'")]
    [InlineData("nbd://h/?tls-username=", NbdUriComponent.Tls, "'tls-username'")]
    [InlineData("nbd://h/?x-a=%00", NbdUriComponent.Query, "NUL")]
    [InlineData("nbd://alice@@h/", NbdUriComponent.Host, "'@'")]
    [InlineData("nbd://%00@h/", NbdUriComponent.UserInfo, "NUL")]
    [InlineData("nbd://a%zz@h/", NbdUriComponent.UserInfo, "'%zz'")]
    public void Invalid_uri_is_rejected_naming_the_offending_part(string uri, NbdUriComponent component, string messagePart)
    {
        var error = Assert.Throws<NbdUriException>(() => NbdUri.Parse(uri));

        Assert.Equal(component, error.Component);
        Assert.Contains(messagePart, error.Message, StringComparison.Ordinal);
        Assert.StartsWith("Invalid NBD URI: ", error.Message, StringComparison.Ordinal);
        Assert.False(NbdUri.TryParse(uri, out var result));
        Assert.Null(result);
    }

    [Fact]
    public void Password_in_userinfo_is_rejected_without_echoing_it()
    {
        var error = Assert.Throws<NbdUriException>(() => NbdUri.Parse("nbd://alice:s3cret@h/"));

        Assert.Equal(NbdUriComponent.UserInfo, error.Component);
        Assert.DoesNotContain("s3cret", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Export_name_longer_than_4096_utf8_bytes_is_rejected()
    {
        var ascii = Assert.Throws<NbdUriException>(() => NbdUri.Parse("nbd://h/" + new string('a', 4097)));
        var multiByte = Assert.Throws<NbdUriException>(() => NbdUri.Parse("nbd://h/" + Uri.EscapeDataString(new string('é', 2049))));

        Assert.Equal(NbdUriComponent.ExportName, ascii.Component);
        Assert.Contains("4097 UTF-8 bytes", ascii.Message, StringComparison.Ordinal);
        Assert.Contains("4098 UTF-8 bytes", multiByte.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Exception_is_a_format_exception()
    {
        Assert.IsAssignableFrom<FormatException>(Assert.Throws<NbdUriException>(() => NbdUri.Parse("nbd://")));
    }

    [Fact]
    public void TryParse_of_null_is_false_and_of_a_valid_uri_is_true()
    {
        Assert.False(NbdUri.TryParse(null, out _));
        Assert.True(NbdUri.TryParse("nbd://localhost/disk", out var uri));
        Assert.Equal("disk", uri.ExportName);
    }

    [Fact]
    public void Parse_of_null_throws_argument_null()
    {
        Assert.Throws<ArgumentNullException>(() => NbdUri.Parse(null!));
    }

    [Theory]
    [InlineData("NBD://Example.COM:10809/disk", "nbd://example.com/disk")]
    [InlineData("nbd://example.com", "nbd://example.com/")]
    [InlineData("nbd://h:10810", "nbd://h:10810/")]
    [InlineData("nbd://[::1]:10810/d", "nbd://[::1]:10810/d")]
    [InlineData("nbd://[FE80::1%25Eth0]/", "nbd://[fe80::1%25Eth0]/")]
    [InlineData("nbd://h/%61%2f%3F", "nbd://h/a/%3F")]
    [InlineData("nbd+unix:///d?tls-verify-peer=1&socket=/s", "nbd+unix:///d?socket=/s")]
    [InlineData("nbds+unix://alice@/?tls-username=u&tls-psk-file=/k&tls-certificates=/c&tls-verify-peer=0&tls-hostname=n&tls-type=x509&socket=/s",
        "nbds+unix://alice@/?socket=/s&tls-type=x509&tls-hostname=n&tls-verify-peer=0&tls-certificates=/c&tls-psk-file=/k&tls-username=u")]
    [InlineData("nbd+unix:///?socket=/a%3Db%2Bc", "nbd+unix:///?socket=/a%3Db%2Bc")]
    [InlineData("nbd://h/!$&'()*+,;=:@", "nbd://h/!$&'()*+,;=:@")]
    public void ToString_is_canonical(string uri, string canonical)
    {
        var parsed = NbdUri.Parse(uri);

        Assert.Equal(canonical, parsed.ToString());
        Assert.Equal(parsed, NbdUri.Parse(canonical));
    }

    [Fact]
    public void ToString_encodes_what_must_be_encoded()
    {
        var uri = NbdUri.ForUnixSocket("/tmp/my dir/#1?&=.sock", "a b?#%é\U0001F600");

        Assert.Equal("nbd+unix:///a%20b%3F%23%25%C3%A9%F0%9F%98%80?socket=/tmp/my%20dir/%231%3F%26%3D.sock", uri.ToString());
    }

    [Fact]
    public void ForUnixSocket_builds_an_nbd_unix_uri()
    {
        var uri = NbdUri.ForUnixSocket("/run/drydock/nbd.sock", "disk");

        Assert.Equal(NbdTransport.Unix, uri.Transport);
        Assert.False(uri.TlsRequired);
        Assert.Equal("nbd+unix:///disk?socket=/run/drydock/nbd.sock", uri.ToString());
    }

    [Theory]
    [InlineData("127.0.0.1", 10810, "disk", "nbd://127.0.0.1:10810/disk")]
    [InlineData("::1", 10809, "", "nbd://[::1]/")]
    [InlineData("[::1]", 2000, "x", "nbd://[::1]:2000/x")]
    [InlineData("LocalHost", 10809, "/abs", "nbd://localhost//abs")]
    public void ForTcp_builds_an_nbd_uri(string host, int port, string exportName, string expected)
    {
        var uri = NbdUri.ForTcp(host, port, exportName);

        Assert.Equal(expected, uri.ToString());
        Assert.Equal(uri, NbdUri.Parse(expected));
    }

    [Fact]
    public void Builders_validate_their_arguments()
    {
        Assert.Equal(NbdUriComponent.Port, Assert.Throws<NbdUriException>(() => NbdUri.ForTcp("h", 0)).Component);
        Assert.Equal(NbdUriComponent.Port, Assert.Throws<NbdUriException>(() => NbdUri.ForTcp("h", 65536)).Component);
        Assert.Equal(NbdUriComponent.Host, Assert.Throws<NbdUriException>(() => NbdUri.ForTcp("", 1)).Component);
        Assert.Equal(NbdUriComponent.Host, Assert.Throws<NbdUriException>(() => NbdUri.ForTcp("a/b", 1)).Component);
        Assert.Equal(NbdUriComponent.Host, Assert.Throws<NbdUriException>(() => NbdUri.ForTcp("1:2:3", 1)).Component);
        Assert.Equal(NbdUriComponent.ExportName, Assert.Throws<NbdUriException>(() => NbdUri.ForTcp("h", 1, "a\0b")).Component);
        Assert.Equal(NbdUriComponent.ExportName, Assert.Throws<NbdUriException>(() => NbdUri.ForTcp("h", 1, "\ud800")).Component);
        Assert.Equal(NbdUriComponent.Socket, Assert.Throws<NbdUriException>(() => NbdUri.ForUnixSocket("")).Component);
        Assert.Equal(NbdUriComponent.Socket, Assert.Throws<NbdUriException>(() => NbdUri.ForUnixSocket("/a\0b")).Component);
        Assert.Equal(NbdUriComponent.ExportName, Assert.Throws<NbdUriException>(() => NbdUri.ForUnixSocket("/s", new string('x', 4097))).Component);
    }

    [Fact]
    public void WithTls_requires_tls_and_sets_parameters()
    {
        var uri = NbdUri.ForUnixSocket("/s", "disk").WithTls(certificatesDirectory: "/pki", hostname: "localhost");

        Assert.True(uri.TlsRequired);
        Assert.Equal("nbds+unix", uri.Scheme);
        Assert.Equal("nbds+unix:///disk?socket=/s&tls-hostname=localhost&tls-certificates=/pki", uri.ToString());
        Assert.Equal("nbds://h:1/?tls-verify-peer=0", NbdUri.ForTcp("h", 1).WithTls(verifyPeer: false).ToString());
    }

    [Fact]
    public void WithExportName_keeps_everything_else()
    {
        var uri = NbdUri.Parse("nbds://h:1/a?tls-certificates=/pki&x-y=z").WithExportName("b c");

        Assert.Equal("nbds://h:1/b%20c?tls-certificates=/pki&x-y=z", uri.ToString());
    }

    [Fact]
    public void Equality_compares_canonical_forms()
    {
        var a = NbdUri.Parse("NBD://H:10809/disk");
        var b = NbdUri.Parse("nbd://h/disk");

        Assert.Equal(a, b);
        Assert.Equal(a.GetHashCode(), b.GetHashCode());
        Assert.NotEqual(a, NbdUri.Parse("nbd://h/Disk"));
        Assert.False(a.Equals(null));
    }

    [Fact]
    public void Random_export_names_and_socket_paths_round_trip_through_ToString_and_Parse()
    {
        var property = Prop.ForAll(
            Arb.From(Gen.Zip(TextWithoutNul(maxLength: 1000), SocketPaths())),
            pair =>
            {
                var (exportName, socketPath) = pair;
                var built = NbdUri.ForUnixSocket(socketPath, exportName);
                var parsed = NbdUri.Parse(built.ToString());
                return parsed.ExportName == exportName
                    && parsed.SocketPath == socketPath
                    && parsed.Equals(built)
                    && parsed.ToString() == built.ToString();
            });

        Check.One(Config.QuickThrowOnFailure.WithMaxTest(500), property);
    }

    [Fact]
    public void Random_export_names_round_trip_over_tcp_with_tls_parameters()
    {
        var property = Prop.ForAll(
            Arb.From(Gen.Zip(TextWithoutNul(maxLength: 200), TextWithoutNul(maxLength: 40).Where(s => s.Length > 0))),
            pair =>
            {
                var (exportName, certificates) = pair;
                var built = NbdUri.ForTcp("[::1]", 10900, exportName).WithTls(certificatesDirectory: certificates);
                var parsed = NbdUri.Parse(built.ToString());
                return parsed.ExportName == exportName && parsed.TlsCertificates == certificates && parsed.Equals(built);
            });

        Check.One(Config.QuickThrowOnFailure.WithMaxTest(300), property);
    }

    // Any Unicode scalar value except NUL, weighted towards the characters URIs treat specially.
    private static Gen<string> TextWithoutNul(int maxLength)
    {
        var special = Gen.Elements("%/?#[]@!$&'()*+,;=: ~-._\\\"<>{}|^`\t\r\n\u007f".ToCharArray()).Select(c => new Rune(c));
        var ascii = Gen.Choose(1, 0x7f).Select(c => new Rune(c));
        var bmp = Gen.Choose(0x80, 0xfffd).Where(c => c is < 0xd800 or > 0xdfff).Select(c => new Rune(c));
        var astral = Gen.Choose(0x10000, 0x10ffff).Select(c => new Rune(c));
        var rune = Gen.Frequency((4, special), (4, ascii), (2, bmp), (1, astral));
        return Gen.Sized(size => Gen.Choose(0, Math.Min(size * 4, maxLength)))
            .SelectMany(length => Gen.ArrayOf(rune, length))
            .Select(runes =>
            {
                var builder = new StringBuilder();
                foreach (var r in runes)
                {
                    builder.Append(r.ToString());
                }

                return builder.ToString();
            });
    }

    private static Gen<string> SocketPaths() =>
        Gen.Frequency(
            (4, TextWithoutNul(maxLength: 100).Where(s => s.Length > 0)),
            (1, TextWithoutNul(maxLength: 100).Where(s => s.Length > 0).Select(s => "\0" + s)));
}
