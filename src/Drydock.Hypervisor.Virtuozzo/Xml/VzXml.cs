using System.Xml;
using System.Xml.Linq;

namespace Drydock.Hypervisor.Virtuozzo.Xml;

/// <summary>Loads Virtuozzo API XML without DTDs or entity expansion, with a size cap; yes/no attributes.</summary>
internal static class VzXml
{
    public const int MaxLength = 8 * 1024 * 1024;

    public static XElement Load(string xml, string root)
    {
        if (xml.Length > MaxLength)
        {
            throw new FormatException($"<{root}> XML is {xml.Length} characters, over the {MaxLength} limit.");
        }

        XElement element;
        try
        {
            var settings = new XmlReaderSettings { DtdProcessing = DtdProcessing.Prohibit, XmlResolver = null, MaxCharactersFromEntities = 0 };
            using var text = new StringReader(xml);
            using var reader = XmlReader.Create(text, settings);
            element = XElement.Load(reader);
        }
        catch (XmlException ex)
        {
            throw new FormatException($"<{root}> XML is not well-formed: {ex.Message}", ex);
        }

        return element.Name.LocalName == root ? element : throw new FormatException($"Expected <{root}>, got <{element.Name}>.");
    }

    /// <summary>Reads a <c>virYesNo</c> attribute: null when absent.</summary>
    public static bool? YesNo(XElement element, string name) => (string?)element.Attribute(name) switch
    {
        null => null,
        "yes" => true,
        "no" => false,
        var other => throw new FormatException($"<{element.Name.LocalName} {name}='{other}'>: expected 'yes' or 'no'."),
    };

    public static string YesNo(bool value) => value ? "yes" : "no";
}
